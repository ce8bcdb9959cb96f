# attack: two-argument iter(callable, sentinel) as an unbounded C loop
# expect: smoke; error
class Mechanism:
    def suggest(self, view):
        n = sum(iter(lambda: 1, 0))
        return [{"changes": {"X": n}}]
