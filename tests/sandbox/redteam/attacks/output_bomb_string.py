# attack: output bomb: a 100 MB string
# expect: smoke; memory
class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": "A" * 100_000_000}]
