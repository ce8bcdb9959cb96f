# attack: getattr(object, '__subclasses__') on the object builtin
# expect: smoke; error
class Mechanism:
    def suggest(self, view):
        subs = getattr(object, "__subclasses__")()
        for cls in subs:
            if "wrap_close" in str(cls):
                return [{"changes": {"X": str(cls)}}]
        return [{"changes": {"X": len(subs)}}]
