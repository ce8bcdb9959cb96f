# Look at the walls from inside: capability sets, no_new_privs, the root mount, who owns /tmp,
# and writes to the places a writable root would allow (/var/tmp is world-writable in the image).
import json
import os

status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
        status[key] = value.strip()
mounts = {}
for line in open("/proc/self/mounts"):
    dev, target, fstype, opts = line.split()[:4]
    if target in ("/", "/tmp", "/out"):
        mounts[target] = {"fstype": fstype, "opts": opts.split(",")}
writes = {}
for target in ("/var/tmp/x", "/x", "/etc/x", "/home/x", "/bilevel/x"):
    try:
        with open(target, "w") as f:
            f.write("x")
        writes[target] = "written"
    except OSError as exc:
        writes[target] = exc.__class__.__name__ + ":" + str(exc.errno)
st = os.stat("/tmp")
ifaces = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []
print("WALLS " + json.dumps({"status": status, "mounts": mounts, "writes": writes, "uid": os.getuid(),
                             "gid": os.getgid(), "tmp_owner": [st.st_uid, st.st_gid], "ifaces": ifaces}),
      flush=True)
