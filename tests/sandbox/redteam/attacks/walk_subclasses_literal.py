# attack: object graph walk: ().__class__.__base__.__subclasses__()
# expect: ast; compile
class Mechanism:
    def suggest(self, view):
        subs = ().__class__.__base__.__subclasses__()
        return [{"changes": {"X": str(subs)[:100]}}]
