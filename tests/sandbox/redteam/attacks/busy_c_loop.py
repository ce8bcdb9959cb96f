# attack: CPU burn inside C calls between fuel ticks
# expect: smoke; timeout
class Mechanism:
    def suggest(self, view):
        s = "ab" * 4_000_000
        n = 0
        while True:
            n = n + s.count("ba") + s.count("bb") + s.count("aa")
