# attack: the seeded Random instance behind random.random
# expect: smoke; error
import random

class Mechanism:
    def suggest(self, view):
        rng = getattr(random.random, "__se" + "lf__")
        rng.seed(0)
        return [{"changes": {"X": rng.random()}}]
