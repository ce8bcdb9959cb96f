# attack: rebinding the guard name _getattr_
# expect: ast; compile
_getattr_ = lambda obj, name: obj

class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(().__class__)}]
