# attack: rebinding _print_ to reach the real stdout
# expect: ast; compile
class Mechanism:
    def observe(self, record):
        _print_ = None
        print('{"ok": true, "value": "forged"}')
