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

LABEL_ROLE = "bilevel.role"      # "trial", "mechanism" or "evaluation"; used to sweep orphans
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
    cpuset: str | None = None,
    gpu_ids: list[int] | tuple[int, ...] | None = None,
    runtime: str = "runc",
) -> dict[str, Any]:
    """Settings for `client.containers.create(**kwargs)` for a trial, a mechanism daemon or a
    code-mode model container (role "evaluation").

    `cpuset` and `gpu_ids` are a parallel slot's share (`runtime/run/slots.py`): its own CPUs and
    its own GPU ids in place of the policy's. `runtime` is what `runtimes.runtime_for` chose for
    this kind of sandbox ("runc" or "runsc").
    """
    # "evaluation" is code mode's model container: its own limits, the same walls.
    limits = {"trial": policy.trial, "evaluation": policy.evaluation}.get(role, policy.mechanism)
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
        nano_cpus=int(_cpu_limit(float(limits["cpus"]), cpuset) * 1e9),
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
    if cpuset is not None:
        # Invariant 4: a CPU limit of the trial's own, disjoint from every other slot's: parallel
        # trials are pinned to cores no other trial of the run may use, so none can starve another.
        kwargs["cpuset_cpus"] = cpuset
    if role == "trial":
        # Invariant 4: no single file may outgrow the output cap, whatever the supervisor's
        # polling of the output folder's total misses between two looks.
        cap = int(limits["output_mb"]) * 2**20
        kwargs["ulimits"] = [Ulimit(name="fsize", soft=cap, hard=cap)]
    if gpu:
        extra = gpu_kwargs(policy, gpu_ids)
        kwargs["mounts"] += extra.pop("mounts", [])
        kwargs["environment"].update(extra.pop("environment", {}))
        kwargs.update(extra)
    return kwargs


def _cpu_limit(limit: float, cpuset: str | None) -> float:
    """The policy's CPU limit, never more than the cores of the slot's cpuset."""
    if cpuset is None:
        return limit
    cores = sum(len(range(int(a), int(b or a) + 1)) for a, _, b in (p.partition("-") for p in cpuset.split(",")))
    return min(limit, float(cores))


def gpu_kwargs(policy: Policy, gpu_ids: list[int] | tuple[int, ...] | None = None) -> dict[str, Any]:
    """GPU passthrough as the policy says: `toolkit` (device_requests) or explicit `devices`.

    `gpu_ids` (a slot's share) replaces the policy's ids: invariant 4, a slot sees only its GPUs.
    """
    ids = policy.gpu_ids() if gpu_ids is None else list(gpu_ids)
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
