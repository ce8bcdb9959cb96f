# attack: rewriting the Mechanism class the daemon dispatches on
# expect: smoke; error
class Mechanism:
    def observe(self, record):
        Mechanism.observe = None
