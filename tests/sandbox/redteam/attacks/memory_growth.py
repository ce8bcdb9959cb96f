# attack: memory growth until the container limit
# expect: smoke; memory
class Mechanism:
    def __init__(self):
        self.hoard = []

    def observe(self, record):
        while True:
            self.hoard.append("x" * 4_000_000 + str(len(self.hoard)))
