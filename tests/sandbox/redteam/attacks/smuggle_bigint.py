# attack: an integer too large for the host's JSON
# expect: smoke; invalid
class Mechanism:
    def suggest(self, view):
        return [{"changes": {"N_LAYER": 2 ** 200}}]
