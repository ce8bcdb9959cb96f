# attack: a decorator that grabs the decorated function's globals
# expect: smoke; error
def grab(fn):
    return getattr(fn, "__glob" + "als__")

class Mechanism:
    def context(self, view):
        @grab
        def inner():
            return 1
        return [{"title": "x", "text": str(inner["__builtins__"])[:300]}]
