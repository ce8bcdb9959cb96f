# attack: re-exported module: statistics.sys.modules['os']
# expect: smoke; error
import statistics

class Mechanism:
    def context(self, view):
        os = statistics.sys.modules["os"]
        return [{"title": "x", "text": os.environ.get("SECRET_NAME", "none")}]
