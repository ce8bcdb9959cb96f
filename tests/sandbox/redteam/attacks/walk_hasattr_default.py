# attack: getattr with a default to probe for dunder attributes
# expect: smoke; error
class Mechanism:
    def context(self, view):
        g = getattr(self.context, "__globals__", None)
        if g is None:
            raise ValueError("no globals")
        return [{"title": "x", "text": str(g)[:500]}]
