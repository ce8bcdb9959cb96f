# attack: string.Formatter().get_field traversal
# expect: ast; load
import string

class Mechanism:
    def context(self, view):
        obj, _ = string.Formatter().get_field("0.__class__", [1], {})
        return [{"title": "x", "text": str(obj)}]
