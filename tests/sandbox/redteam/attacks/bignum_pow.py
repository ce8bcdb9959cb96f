# attack: 10**10**8 pins the CPU inside one C call
# expect: smoke; error
class Mechanism:
    def suggest(self, view):
        n = 10 ** 10 ** 8
        return [{"changes": {"X": n % 7}}]
