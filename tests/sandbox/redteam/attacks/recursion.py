# attack: unbounded recursion
# expect: smoke; error
class Mechanism:
    def down(self, n):
        return self.down(n + 1)

    def context(self, view):
        return [{"title": "x", "text": str(self.down(0))}]
