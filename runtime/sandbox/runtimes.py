"""Which OCI runtime each kind of sandbox runs under: runc, or gVisor's runsc as a second wall.

Why a second wall: mechanisms are LLM-written code that runs all the time, beside the run. Under
runsc their system calls meet gVisor's user-space kernel (the Sentry) before the host's, so a
kernel bug reachable from the container is no longer enough to escape (invariant 3). Its cost is
small for the mechanism daemon's stdio round trips and large for torch, hence the default:

- `runtime = "auto"` (the default): runsc for mechanisms wherever it works, runc for trials;
- `runtime = "runsc"`: runsc or nothing; a sandbox of that kind refuses to start without it
  (fail closed, invariant 6);
- `runtime = "runc"`: Docker's default runtime.

"Works" is asked of the daemon once per process: runsc must be registered (`docker info`
lists it; `scripts/engine.sh` registers it with `runtimeArgs: ["--network=none"]`, without
which every `network_mode=none` container fails under runsc) and a hardened probe container of
the mechanism image must run under it. Some kernels and VMs refuse gVisor; then `auto` falls
back to runc and says so in the log and in `bilevel doctor`, never silently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import docker
import requests
from docker.errors import DockerException

from bilevel.runtime.logs import get_logger
from bilevel.runtime.policy import Policy
from bilevel.runtime.sandbox import hardening, images
from bilevel.runtime.sandbox.engine import EngineUnavailable

RUNSC = "runsc"
RUNC = "runc"
PROBE = ["python3", "-I", "-c", "print('runsc-ok')"]


class RuntimeUnavailable(EngineUnavailable):
    """The policy asks for runsc and the daemon cannot run it: refused like a missing daemon
    (invariant 6, fail closed; the CLI exits 2 with the fix)."""


@dataclass(frozen=True)
class RunscStatus:
    works: bool
    detail: str


_STATUS: dict[str, RunscStatus] = {}
_WARNED: set[str] = set()


def runsc_status(client: docker.DockerClient, policy: Policy) -> RunscStatus:
    """Whether runsc is registered with the daemon and runs a hardened mechanism container."""
    key = str(client.api.base_url)
    if key not in _STATUS:
        _STATUS[key] = _probe(client, policy)
        get_logger().info("runsc_probe", works=_STATUS[key].works, detail=_STATUS[key].detail)
    return _STATUS[key]


def _probe(client: docker.DockerClient, policy: Policy) -> RunscStatus:
    try:
        registered = RUNSC in (client.info().get("Runtimes") or {})
    except (DockerException, requests.RequestException) as exc:
        return RunscStatus(False, f"the daemon did not answer: {exc}")
    if not registered:
        return RunscStatus(False, "runsc is not registered with dockerd (bash scripts/engine.sh registers it)")
    try:
        image = images.image_for(client, "mechanism")
    except Exception as exc:  # noqa: BLE001 - any reason the image is missing means "cannot tell"
        return RunscStatus(False, f"no mechanism image to probe with: {exc}")
    kwargs = hardening.container_kwargs(policy, "mechanism", image.id, PROBE, runtime=RUNSC,
                                        host_mounts=images.host_mounts(image),
                                        labels={hardening.LABEL_TRIAL: "runsc-probe"})
    container = None
    try:
        container = client.containers.create(name=f"bilevel-probe-{uuid.uuid4().hex[:12]}", **kwargs)
        container.start()
        code = container.wait(timeout=60).get("StatusCode")
        out = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    except (DockerException, requests.RequestException) as exc:
        return RunscStatus(False, f"runsc is registered but a container fails under it: {str(exc)[:300]}")
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except (DockerException, requests.RequestException):
                pass
    if code != 0 or "runsc-ok" not in out:
        return RunscStatus(False, f"runsc is registered but the probe exited {code}: {out[-300:]!r}")
    return RunscStatus(True, "runsc is registered and runs the mechanism image")


def runtime_for(client: docker.DockerClient, policy: Policy, role: str) -> str:
    """The runtime a sandbox of `role` ("trial" or "mechanism") runs under, per the policy."""
    wanted = (policy.trial if role == "trial" else policy.mechanism)["runtime"]
    if wanted == RUNC or (wanted == "auto" and role == "trial"):
        return RUNC
    status = runsc_status(client, policy)
    if status.works:
        return RUNSC
    if wanted == RUNSC:
        raise RuntimeUnavailable(f"the policy asks for runtime = \"runsc\" ({role}) but {status.detail}; "
                                 "run `bash scripts/engine.sh`, or set runtime = \"auto\" or \"runc\"")
    if role not in _WARNED:  # visible, once per process and kind: never a silent fallback
        _WARNED.add(role)
        get_logger().warning("runsc_unavailable", role=role, detail=status.detail, using=RUNC)
    return RUNC


def describe(client: docker.DockerClient, policy: Policy) -> dict[str, str]:
    """For `bilevel doctor`: the runtime each kind will use, or why it cannot start."""
    out = {}
    for role in ("trial", "mechanism"):
        try:
            out[role] = runtime_for(client, policy, role)
        except RuntimeUnavailable as exc:
            out[role] = f"none ({exc})"
    return out
