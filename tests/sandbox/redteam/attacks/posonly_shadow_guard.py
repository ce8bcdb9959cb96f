# attack: positional-only parameter shadowing a guard name
# expect: ast; compile
def probe(obj, _getattr_=lambda o, n: o, /):
    return obj.__class__

class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(probe(1))}]
