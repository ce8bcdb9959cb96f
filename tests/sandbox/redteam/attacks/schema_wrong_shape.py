# attack: a hook returning the wrong shape (accept says 'maybe')
# expect: smoke; invalid
class Mechanism:
    def accept(self, result, view):
        return "maybe"
