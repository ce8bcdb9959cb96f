# attack: re-exported module: from collections import abc
# expect: load; load
from collections import abc

class Mechanism:
    def context(self, view):
        return [{"title": "x", "text": str(abc)}]
