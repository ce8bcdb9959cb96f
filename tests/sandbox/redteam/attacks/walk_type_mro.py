# attack: type(x).mro() to reach object
# expect: ast; error
class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(type(1).mro())}]
