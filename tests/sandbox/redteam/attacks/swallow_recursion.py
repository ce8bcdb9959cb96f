# attack: recursion under try/except that keeps retrying
# expect: smoke; timeout
class Mechanism:
    def spin(self, n):
        try:
            return self.spin(n + 1)
        except:
            return self.spin(n + 1)

    def suggest(self, view):
        return [{"changes": {"X": self.spin(0)}}]
