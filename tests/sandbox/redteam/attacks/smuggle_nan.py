# attack: NaN and infinity in constraint ranges
# expect: smoke; invalid
class Mechanism:
    def constraints(self, view):
        return {"forbid": [], "ranges": {"LEARNING_RATE": [float("nan"), float("inf")]}}
