# attack: exception.with_traceback to get a traceback object
# expect: ast; error
class Mechanism:
    def context(self, view):
        e = ValueError("x")
        tb = e.with_traceback(None)
        return [{"title": "x", "text": str(tb)}]
