# attack: object graph walk through getattr with built strings
# expect: smoke; error
class Mechanism:
    def context(self, view):
        cls = getattr((), "_" + "_class_" + "_")
        base = getattr(cls, "_" + "_base_" + "_")
        subs = getattr(base, "_" + "_subclasses_" + "_")()
        return [{"title": "x", "text": str(subs)[:1000]}]
