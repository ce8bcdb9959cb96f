# attack: infinite loop that swallows every exception (bare except)
# expect: smoke; fuel
class Mechanism:
    def suggest(self, view):
        while True:
            try:
                while True:
                    pass
            except:
                pass
