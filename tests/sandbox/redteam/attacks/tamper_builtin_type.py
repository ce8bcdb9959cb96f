# attack: tampering with a builtin type shared by the daemon
# expect: smoke; error
class Mechanism:
    def observe(self, record):
        dict.get = lambda self, k, d=None: "pwned"
