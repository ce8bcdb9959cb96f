# attack: f-string attribute traversal
# expect: ast; compile
class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": f"{view.__class__.__mro__}"}]
