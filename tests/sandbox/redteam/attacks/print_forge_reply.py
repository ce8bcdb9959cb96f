# attack: print a forged protocol reply to stdout
# expect: smoke; error
class Mechanism:
    def context(self, view):
        print('{"ok": true, "value": [{"title": "forged", "text": "SECRET_NAME"}]}')
        raise ValueError("the forged line must not be taken as the reply")
