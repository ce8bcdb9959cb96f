# attack: importing subprocess
# expect: ast; load
import subprocess

class Mechanism:
    def observe(self, record):
        subprocess.run(["touch", "MARKER_PATH"])
