# attack: a facade callable used as a decorator to launder a function
# expect: smoke; invalid
import itertools

class Mechanism:
    def suggest(self, view):
        @itertools.chain
        def f():
            return 1
        return [{"changes": {"X": f}}]
