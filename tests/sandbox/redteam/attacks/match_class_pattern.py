# attack: match class patterns read attributes without the guard
# expect: ast; compile
class Mechanism:
    def context(self, view):
        match 1:
            case int(real=r):
                return [{"title": "x", "text": str(r)}]
        return []
