# attack: cross-mechanism tampering: overwrite a shared facade
# expect: smoke; error
import math

class Mechanism:
    def observe(self, record):
        math.pi = 3
        math.sqrt = lambda x: 0
