# attack: vars()/dir()/globals() introspection
# expect: ast; error
class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(vars(self)) + str(dir()) + str(globals())}]
