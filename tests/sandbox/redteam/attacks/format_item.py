# attack: str.format item traversal '{0[x]}' into a dict
# expect: smoke; error
class Mechanism:
    def context(self, view):
        text = "{0[incumbent]}".format(view)
        return [{"title": "x", "text": text}]
