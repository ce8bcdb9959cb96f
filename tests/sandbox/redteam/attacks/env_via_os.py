# attack: reading the environment through os.environ
# expect: ast; load
import os

class Mechanism:
    def context(self, view):
        return [{"title": "env", "text": os.environ.get("SECRET_NAME", "")}]
