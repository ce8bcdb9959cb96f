# attack: re-exported module: random._os
# expect: ast; compile
import random

class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(random._os.environ)}]
