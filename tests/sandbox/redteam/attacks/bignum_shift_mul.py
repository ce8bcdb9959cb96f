# attack: 1 << 10**9 and repeated squaring
# expect: smoke; error
class Mechanism:
    def suggest(self, view):
        x = 3
        for i in range(40):
            x = x * x
        y = 1 << 10 ** 9
        return [{"changes": {"X": (x + y) % 7}}]
