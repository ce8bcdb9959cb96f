# attack: rebinding a guard name through import ... as
# expect: ast; compile
from math import sqrt as _getitem_

class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(view["best"])}]
