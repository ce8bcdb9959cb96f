# attack: big numbers through augmented assignment
# expect: smoke; error
class Mechanism:
    def suggest(self, view):
        x = 7
        for i in range(30):
            x **= 2
        return [{"changes": {"X": x % 5}}]
