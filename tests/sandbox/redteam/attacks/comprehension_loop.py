# attack: an endless walk hidden in comprehensions over itertools
# expect: smoke; fuel
import itertools

class Mechanism:
    def suggest(self, view):
        xs = [a + b for a, b in itertools.product(range(10_000), range(10_000))]
        return [{"changes": {"X": len(xs)}}]
