# attack: str.mro() through the attribute guard
# expect: ast; error
class Mechanism:
    def context(self, view):
        root = str.mro()[-1]
        return [{"title": "x", "text": str(root)}]
