# attack: __builtins__['open'] through the globals
# expect: ast; compile
class Mechanism:
    def suggest(self, view):
        f = __builtins__["open"]("MARKER_PATH", "w")
        f.write("escaped")
        return []
