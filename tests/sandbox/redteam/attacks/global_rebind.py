# attack: global statement to rebind the sandbox's module names
# expect: ast; compile
counter = 0

class Mechanism:
    def observe(self, record):
        global counter
        counter = counter + 1
        raise ValueError("global accepted")
