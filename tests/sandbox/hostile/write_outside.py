# Attack: write anywhere but the output folder. Every path is inside the trial container
# (/work/train.py is where the executor mounts the script), never one of the host's.
import json

targets = ["/evil", "/bilevel/launch.py", "/work/train.py", "/data/canary.txt", "/etc/evil",
           "/usr/evil", "/root/evil", "/var/evil", "/out/ok.txt", "/tmp/ok.txt"]
wrote = {}
for t in targets:
    try:
        with open(t, "a") as f:
            f.write("pwned\n")
        wrote[t] = True
    except OSError:
        wrote[t] = False
print("WROTE " + json.dumps(wrote), flush=True)
