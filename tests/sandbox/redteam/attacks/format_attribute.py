# attack: str.format attribute traversal '{0.__class__}'
# expect: smoke; error
class Mechanism:
    def context(self, view):
        text = "{0.__class__.__base__.__subclasses__}".format(1)
        return [{"title": "x", "text": text}]
