# attack: math.factorial of a huge number
# expect: smoke; error
import math

class Mechanism:
    def suggest(self, view):
        return [{"changes": {"X": math.factorial(10 ** 7) % 3}}]
