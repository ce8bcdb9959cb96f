# attack: a dict subclass returned as if it were a dict
# expect: load; load
class Fake(dict):
    pass

class Mechanism:
    def constraints(self, view):
        return Fake(forbid=[], ranges={})
