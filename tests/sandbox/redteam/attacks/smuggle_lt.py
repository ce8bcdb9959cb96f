# attack: __lt__ object smuggled into review output for the host to sort
# expect: ast; compile
class Bomb:
    def __lt__(self, other):
        return True

class Mechanism:
    def review(self, candidates, view):
        return [Bomb(), Bomb()]
