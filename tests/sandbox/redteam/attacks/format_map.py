# attack: str.format_map attribute traversal
# expect: ast; error
class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": "{x.__class__}".format_map({"x": 1})}]
