# attack: exec / eval / compile
# expect: ast; compile
class Mechanism:
    def observe(self, record):
        exec("open('MARKER_PATH', 'w')")
        eval("1")
