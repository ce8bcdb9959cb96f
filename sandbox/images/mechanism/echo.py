"""A JSON-lines echo: the floor a mechanism call cannot beat (bench/mechanism_latency.py).

`--ack` answers each line with a short `{"ok":true}` instead of the line itself, which is
what a hook call's reply looks like (the request carries the view, the reply is small).

Why in the image: the raw stdio round trip of an idle container has to be measured through
the same attach socket, container and interpreter as the daemon, in the same run.
"""

import os
import sys


def main() -> int:
    stdin = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    ack = "--ack" in sys.argv[1:]
    while True:
        line = stdin.readline()
        if not line:
            break
        out.write(b'{"ok":true}\n' if ack else line)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
