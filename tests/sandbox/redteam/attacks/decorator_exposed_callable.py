# attack: decorators: @staticmethod / @property on exposed callables
# expect: ast; load
class Mechanism:
    @property
    def leak(self):
        return self

    @staticmethod
    def context(view):
        return [{"title": "x", "text": "x"}]
