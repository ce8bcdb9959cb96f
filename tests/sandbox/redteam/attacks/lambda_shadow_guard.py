# attack: lambda keyword default shadowing _getiter_
# expect: ast; compile
class Mechanism:
    def suggest(self, view):
        f = lambda _getiter_=None: [x for x in range(3)]
        return [{"changes": {"X": len(f())}}]
