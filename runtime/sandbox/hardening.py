"""The one place that turns a policy into Docker container settings.

Trials and mechanism daemons both get their container settings from `container_kwargs`,
so a hardening property is written once and holds for every sandbox. Each setting names the
DESIGN.md security invariant it enforces; tests/sandbox/test_trial_hostile.py and the mechanism
red-team suite attack them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from bilevel.runtime.policy import Policy

LABEL_ROLE = "bilevel.role"      # "trial" or "mechanism"; used to sweep orphans
LABEL_OWNER = "bilevel.owner"    # "<hostname>:<pid>" of the orchestrator that created it
LABEL_RUN = "bilevel.run"
LABEL_TRIAL = "bilevel.trial"
NVIDIA_NODES = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
# Under runsc the container's pids cgroup also holds gVisor's own Sentry and gofer threads (a Go
# runtime): at 32 the sandbox hung in `runsc start`, blocking the daemon's API. The sandboxed
# code's processes are Sentry tasks, not host threads, so this floor does not widen what it may do.
RUNSC_PIDS_FLOOR = 128


def owner_label() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def container_kwargs(
    policy: Policy,
    role: str,
    image: str,
    command: list[str],
    *,
    mounts: list[Mount] = (),
    labels: dict[str, str] | None = None,
    gpu: bool = False,
    host_mounts: list[str] = (),
    stdin: bool = False,
    runtime: str = "runc",
) -> dict[str, Any]:
    """Settings for `client.containers.create(**kwargs)` for a trial or a mechanism daemon.

    `runtime` is what `runtimes.runtime_for` chose for this kind of sandbox ("runc" or "runsc").
    """
    limits = policy.trial if role == "trial" else policy.mechanism
    uid, gid = policy.user.split(":")
    tmpfs_mb = limits.get("tmpfs_mb", 16)
    kwargs: dict[str, Any] = dict(
        image=image,
        command=command,
        # Invariant 4/3: no network at all, not even a loopback to the host.
        network_mode="none",
        # Invariant 4/3: read-only root; the only writable places are the capped tmpfs and /out.
        read_only=True,
        # Invariant 4/3: a non-root user, no capabilities, no privilege gain through setuid.
        user=policy.user,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        # Invariant 4: the tmpfs belongs to the sandbox user through uid=/gid= (an engine was seen
        # to ignore mode=1777), and is capped in size.
        tmpfs={"/tmp": f"size={tmpfs_mb}m,uid={uid},gid={gid},mode=1777,nosuid,nodev"},
        # Invariant 4/3: memory with swap off, pids and CPU limits.
        mem_limit=f"{limits['memory_mb']}m",
        memswap_limit=f"{limits['memory_mb']}m",
        pids_limit=int(limits["pids"]) if runtime != "runsc" else max(int(limits["pids"]), RUNSC_PIDS_FLOOR),
        nano_cpus=int(float(limits["cpus"]) * 1e9),
        # Invariant 4: the engine's own log of the container is capped too.
        log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
        # Invariant 4: an init process reaps whatever the sandboxed code forks.
        init=True,
        # Invariant 1/4: an empty environment; nothing of the orchestrator's leaks in.
        environment={},
        hostname="sandbox",
        working_dir="/tmp",
        # Invariant 4: labels let a later start sweep containers orphaned by a crash.
        labels={LABEL_ROLE: role, LABEL_OWNER: owner_label(), **(labels or {})},
        mounts=list(mounts)
        + [Mount(target=p, source=p, type="bind", read_only=True) for p in host_mounts],
        stdin_open=stdin,
        detach=True,
        # Invariant 3: under "runsc" (gVisor) the sandbox's system calls meet a user-space kernel
        # first, a second wall behind the container's; runtimes.py decides where it is used.
        runtime=runtime,
    )
    if role == "trial":
        # Invariant 4: no single file may outgrow the output cap, whatever the supervisor's
        # polling of the output folder's total misses between two looks.
        cap = int(limits["output_mb"]) * 2**20
        kwargs["ulimits"] = [Ulimit(name="fsize", soft=cap, hard=cap)]
    if gpu:
        extra = gpu_kwargs(policy)
        kwargs["mounts"] += extra.pop("mounts", [])
        kwargs["environment"].update(extra.pop("environment", {}))
        kwargs.update(extra)
    return kwargs


def gpu_kwargs(policy: Policy) -> dict[str, Any]:
    """GPU passthrough as the policy says: `toolkit` (device_requests) or explicit `devices`."""
    ids = policy.gpu_ids()
    if ids is None:
        return {}
    if policy.gpu["gpu_mode"] == "toolkit":
        req = (
            DeviceRequest(count=-1, capabilities=[["gpu"]])
            if not ids
            else DeviceRequest(device_ids=[str(i) for i in ids], capabilities=[["gpu"]])
        )
        return {"device_requests": [req]}
    nodes = [f"/dev/nvidia{i}" for i in ids] if ids else sorted(
        str(p) for p in Path("/dev").glob("nvidia[0-9]*")
    )
    devices = [f"{n}:{n}:rwm" for n in nodes + NVIDIA_NODES if Path(n).exists()]
    dirs = list(policy.gpu["driver_dirs"])
    out: dict[str, Any] = {
        "devices": devices,
        "mounts": [Mount(target=d, source=d, type="bind", read_only=True) for d in dirs],
    }
    if dirs:
        # The one environment entry a sandbox may get: where the driver libraries are mounted.
        out["environment"] = {"LD_LIBRARY_PATH": ":".join(dirs)}
    return out
