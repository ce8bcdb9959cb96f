# attack: output bomb: a list of 100 000 strings (3 MB)
# expect: smoke; invalid
class Mechanism:
    def suggest(self, view):
        out = []
        for i in range(100_000):
            out.append("candidate-%d-with-some-padding" % i)
        return out
