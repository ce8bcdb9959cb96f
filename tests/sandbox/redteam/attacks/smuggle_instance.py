# attack: a plain sandbox object returned instead of JSON
# expect: smoke; invalid
class Thing:
    pass

class Mechanism:
    def suggest(self, view):
        return [{"changes": {"X": Thing()}, "hypothesis": "obj"}]
