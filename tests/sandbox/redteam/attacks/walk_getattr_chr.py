# attack: attribute name assembled from chr() codes
# expect: smoke; error
class Mechanism:
    def context(self, view):
        name = "".join(chr(c) for c in [95, 95, 99, 108, 97, 115, 115, 95, 95])
        return [{"title": "x", "text": str(getattr(1, name))}]
