# attack: print flood: unbounded print in a loop
# expect: smoke; fuel
class Mechanism:
    def observe(self, record):
        while True:
            print("x" * 1000)
