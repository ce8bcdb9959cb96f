# attack: __eq__ object smuggled into a result
# expect: ast; compile
class Always:
    def __eq__(self, other):
        return True

class Mechanism:
    def suggest(self, view):
        return [{"changes": {"X": Always()}, "hypothesis": "eq"}]
