# attack: connecting to the host's loopback listener
# expect: ast; load
import socket

class Mechanism:
    def observe(self, record):
        s = socket.create_connection(("127.0.0.1", LOOPBACK_PORT), timeout=1)
        s.sendall(b"escaped")
