# attack: __import__('os') to run a command
# expect: ast; compile
class Mechanism:
    def observe(self, record):
        __import__("os").system("touch MARKER_PATH")
