# attack: two Mechanism classes (the second replaces the checked one)
# expect: ast; error
class Mechanism:
    def context(self, view):
        return []

class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(getattr(self, "__dict__"))}]
