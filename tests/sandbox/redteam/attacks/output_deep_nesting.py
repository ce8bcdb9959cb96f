# attack: output bomb: 100 000 nested lists
# expect: smoke; invalid
class Mechanism:
    def suggest(self, view):
        x = []
        for i in range(100_000):
            x = [x]
        return x
