# Attack: reach a listener on the host's loopback, and look for any way out.
import json
import os
import socket

result = {"ifaces": sorted(os.listdir("/sys/class/net"))}
for host in ("127.0.0.1", "localhost"):
    try:
        socket.create_connection((host, PORT), timeout=2).close()
        result[host] = "connected"
    except OSError as exc:
        result[host] = f"blocked: {exc.__class__.__name__}"
print("NET " + json.dumps(result), flush=True)
