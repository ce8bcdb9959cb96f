# attack: unbound str.format(fmt, obj) through the class
# expect: smoke; error
class Mechanism:
    def context(self, view):
        fmt = getattr(str, "format")
        return [{"title": "x", "text": fmt("{0.__class__}", 1)}]
