# attack: generator code object through getattr
# expect: smoke; error
class Mechanism:
    def gen(self):
        yield 1

    def context(self, view):
        code = getattr(self.gen(), "gi_" + "code")
        return [{"title": "x", "text": str(getattr(code, "co_" + "consts"))}]
