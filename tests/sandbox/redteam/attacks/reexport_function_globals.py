# attack: a facade function's globals: statistics.mean.__globals__
# expect: smoke; error
import statistics

class Mechanism:
    def context(self, view):
        g = getattr(statistics.mean, "__glob" + "als__")
        return [{"title": "x", "text": str(g["sys"].modules["os"].environ)}]
