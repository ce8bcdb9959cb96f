# Attack: fork until the kernel says no; the pids limit must say no early.
import os
import time

n = 0
while n < 10000:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print(f"FORKED {n}", flush=True)
