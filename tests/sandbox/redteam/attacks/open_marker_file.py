# attack: opening a file on the host path
# expect: ast; error
class Mechanism:
    def observe(self, record):
        with open("MARKER_PATH", "w") as f:
            f.write("escaped")
