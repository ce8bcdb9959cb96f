"""The Docker engine: connect, fail closed, and sweep orphaned sandboxes.

Why fail closed: a policy that asks for Docker isolation must never fall back to running
untrusted code on the host (invariant 6). If no daemon answers we stop and say how to fix it.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, NotFound

from bilevel.runtime.logs import get_logger
from bilevel.runtime.sandbox.hardening import LABEL_OWNER, LABEL_ROLE

FIX = "start one with `bash scripts/engine.sh` (installs docker.io and starts dockerd), then run `bilevel doctor`"


class EngineUnavailable(RuntimeError):
    """No Docker daemon answers; the run refuses to start."""


def connect(timeout: float = 120, wait_s: float = 0) -> docker.DockerClient:
    """A client for the local daemon, or EngineUnavailable with the fix.

    `wait_s` keeps trying that long, for a daemon that is restarting under a run.
    """
    give_up = time.monotonic() + wait_s
    while True:
        try:
            client = docker.from_env(timeout=timeout)
            client.ping()
            return client
        except DockerException as exc:
            if time.monotonic() >= give_up:
                raise EngineUnavailable(f"no Docker daemon answers ({exc.__class__.__name__}); {FIX}") from None
            time.sleep(1)


DEFAULT_SOCKET = "/var/run/docker.sock"


class DaemonNotFound(RuntimeError):
    """No process could be shown to be the daemon behind the project's socket."""


def socket_path(docker_host: str | None = None) -> Path:
    """The Unix socket the project's client talks to: `DOCKER_HOST` (unix://...) or the default."""
    host = docker_host if docker_host is not None else os.environ.get("DOCKER_HOST", "")
    if not host:
        return Path(DEFAULT_SOCKET)
    if not host.startswith("unix://"):
        raise DaemonNotFound(f"DOCKER_HOST={host!r} is not a local Unix socket")
    return Path(host[len("unix://"):])


def socket_owner_pid(path: str | Path) -> int:
    """The pid of the process listening on the Unix socket `path`, as the kernel reports it.

    Why the socket and not a name: a machine may run a second Docker daemon (another user's, or
    a nested engine), and `pidof dockerd` may name that one. SO_PEERCRED on a connection to our
    socket gives the credentials of the process that listens on it, so a restart or a reload
    (SIGHUP) reaches exactly the daemon this project uses, never one picked by name.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(str(path))
        except OSError as exc:
            raise DaemonNotFound(f"nothing listens on {path}: {exc}") from None
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    if pid <= 0:
        raise DaemonNotFound(f"the kernel names no process behind {path}")
    return pid


def daemon_pid(docker_host: str | None = None) -> int:
    """The pid of the dockerd behind the project's socket; it must be a dockerd process."""
    path = socket_path(docker_host)
    pid = socket_owner_pid(path)
    try:
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError as exc:
        raise DaemonNotFound(f"pid {pid} behind {path} cannot be read: {exc}") from None
    if Path(exe).name != "dockerd":
        # e.g. systemd socket activation: pid 1 listens, and signalling it would be wrong.
        raise DaemonNotFound(f"pid {pid} listens on {path} but is {exe!r}, not dockerd")
    return pid


def _alive(owner: str) -> bool:
    host, _, pid = owner.partition(":")
    if host != os.uname().nodename or not pid.isdigit():
        return True  # not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_labeled(client: docker.DockerClient, labels: list[str]) -> None:
    """Remove the containers carrying all `labels` ("key=value"), e.g. one a restarted engine lost."""
    for c in client.containers.list(all=True, sparse=True, filters={"label": labels}):
        try:
            c.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            _gone_or_going(exc)


def _gone_or_going(exc: APIError) -> None:
    """Another process sweeping the same orphan (parallel slots, other runs on one daemon) makes
    the engine answer 409 "removal already in progress": the container goes either way."""
    if exc.status_code != 409:
        raise exc


def sweep_orphans(client: docker.DockerClient) -> list[str]:
    """Remove sandboxes whose orchestrator process on this host is gone (invariant 4)."""
    removed = []
    # Sparse: the list call alone gives names and labels, with no inspect per container, so one
    # container the engine cannot answer for (a runtime hung in start) does not stall the sweep.
    for c in client.containers.list(all=True, sparse=True, filters={"label": LABEL_ROLE}):
        owner = (c.attrs.get("Labels") or {}).get(LABEL_OWNER, "")
        if owner and _alive(owner):
            continue
        try:
            c.remove(force=True)
            removed.append((c.attrs.get("Names") or [c.id])[0].lstrip("/"))
        except NotFound:
            pass
        except APIError as exc:
            _gone_or_going(exc)
    if removed:
        # A warning: it means an earlier orchestrator died with sandboxes running (shown by `bilevel trial` too).
        get_logger().warning("swept_orphans", containers=removed)
    return removed
