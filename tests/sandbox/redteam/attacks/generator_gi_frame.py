# attack: generator frame: gi_frame.f_back.f_globals
# expect: ast; compile
class Mechanism:
    def context(self, view):
        g = (x for x in [1, 2])
        return [{"title": "x", "text": str(g.gi_frame.f_back.f_globals)[:500]}]
