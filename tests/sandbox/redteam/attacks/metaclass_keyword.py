# attack: class keyword metaclass= to bypass class recording
# expect: ast; compile
class Meta:
    pass

class Mechanism(metaclass=Meta):
    def context(self, view):
        return []
