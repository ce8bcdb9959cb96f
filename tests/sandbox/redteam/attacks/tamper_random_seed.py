# attack: cross-mechanism tampering: reseed the shared random state
# expect: smoke; error
import random

class Mechanism:
    def observe(self, record):
        random.seed(0)
