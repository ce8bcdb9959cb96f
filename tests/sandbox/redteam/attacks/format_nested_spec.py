# attack: attribute traversal hidden in a nested format spec
# expect: smoke; error
class Mechanism:
    def context(self, view):
        text = "{0:{1.__class__}}".format(1, 2)
        return [{"title": "x", "text": text}]
