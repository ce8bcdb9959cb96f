# attack: three-argument type() to build a class outside the guards
# expect: ast; error
class Mechanism:
    def suggest(self, view):
        Evil = type("Evil", (object,), {"__eq__": lambda a, b: True})
        return [{"changes": {"X": Evil()}}]
