"""Run one trial in its own hardened container and report its outcome.

One container per trial, created for it and removed after it, always: `_container` removes it
on errors and on KeyboardInterrupt/SystemExit too (the CLI turns SIGTERM into SystemExit).
Data flows one way: the executor writes the trial's inputs, the sandbox runs them, the
supervisor watches, and only plain facts come back.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
import requests
from docker.errors import DockerException
from docker.types import Mount

from bilevel.runtime.logs import get_logger
from bilevel.runtime.policy import Policy
from bilevel.runtime.sandbox import checkout_image, hardening, images, runtimes, supervisor
from bilevel.runtime.sandbox.outcome import classify
from bilevel.runtime.sandbox.output_caps import OutputCaps


@dataclass
class TrialResult:
    """The outcome object of DESIGN.md's CLI contract, plus what the journal needs."""

    trial_id: str
    status: str                 # ok | crash | timeout | oom | invalid
    reason: str
    val_bpb: float | None
    training_seconds: float | None
    wall_seconds: float
    peak_mem_mb: float | None
    exit_code: int | None
    log_tail: str
    script_sha: str
    startup_seconds: float | None = None
    num_steps: float | None = None
    # Code mode (`runtime/evaluation/code_trial.py`): which gate an `invalid` trial failed, the
    # checkpoint's sha256, and the evaluation's own seconds (startup, metric, gates).
    mode: str = "params"
    gate: str | None = None
    checkpoint_sha: str | None = None
    evaluation_seconds: dict | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class InfraError(RuntimeError):
    """The engine failed under the trial (daemon restarted, API error): not the script's fault."""


def new_trial_id() -> str:
    return uuid.uuid4().hex[:12]


@contextmanager
def _container(client: docker.DockerClient, name: str, kwargs: dict, doing: str) -> Iterator:
    """A container created for one block and removed however the block ends (errors,
    KeyboardInterrupt, SystemExit); engine failures become InfraError, not the script's fault."""
    container = None
    try:
        container = client.containers.create(name=name, **kwargs)
        yield container
    except (DockerException, requests.RequestException) as exc:
        raise InfraError(f"the Docker engine failed {doing}: {exc}") from exc
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except (DockerException, requests.RequestException):
                pass  # gone already, or the engine is down: the orphan sweep removes it later


_HOMES: dict[tuple[str, str], str] = {}
HOME_PROBE = "import os; print(os.path.expanduser('~'))"


def sandbox_home(client: docker.DockerClient, policy: Policy, image, log=None) -> str:
    """What `os.path.expanduser("~")` gives a trial's script, asked of the image itself.

    Why ask: a script that keeps data under `~` (karpathy's prepare.py does) needs it mounted
    there, and no environment variable may say where (invariant 4). The engine sets HOME from the
    image's passwd entry for the policy's user: `/nonexistent` for nobody in the bootstrap image,
    whatever the host says with `--base host`, `/` for a uid with no entry. So one hardened probe
    container, once per image and user, answers exactly; the answer is then reused.
    """
    key = (image.id, policy.user)
    if key not in _HOMES:
        kwargs = hardening.container_kwargs(
            policy, "trial", image.id, ["python3", "-I", "-c", HOME_PROBE],
            host_mounts=images.host_mounts(image), labels={hardening.LABEL_TRIAL: "home-probe"},
            runtime=runtimes.runtime_for(client, policy, "trial"),
        )
        with _container(client, f"bilevel-probe-{uuid.uuid4().hex[:12]}", kwargs,
                        "while asking the trial image for its home") as container:
            container.start()
            code = container.wait(timeout=60).get("StatusCode")
            out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace").strip()
        if code != 0 or not posixpath.isabs(out) or "\n" in out:
            raise images.ImageError(f"the trial image gives user {policy.user} no usable home "
                                    f"(exit {code}, {out[:80]!r}); a task that mounts data under ~ cannot run")
        _HOMES[key] = posixpath.normpath(out)
        if log is not None:
            log.info("sandbox_home", home=_HOMES[key], user=policy.user)
    return _HOMES[key]


def _write_inputs(work_dir: Path, script: str) -> tuple[Path, Path]:
    """The trial's folder: its script (read-only to the sandbox) and its one writable `out/`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    script_path, out_dir = work_dir / "train.py", work_dir / "out"
    script_path.write_text(script)
    script_path.chmod(0o644)
    out_dir.mkdir(exist_ok=True)
    out_dir.chmod(0o777)  # the sandbox user must write here; the folder is the trial's alone
    return script_path, out_dir


def _mounts_and_command(client: docker.DockerClient, policy: Policy, image, log, *, script_path: Path,
                        out_dir: Path, data_dir: Path | None, harness_lib: str | None,
                        ro_mounts: Sequence[tuple[Path, str]]) -> tuple[list[Mount], list[str]]:
    # Invariant 4: the script and data are read-only; /out is the one writable folder.
    mounts = [
        Mount(target="/work/train.py", source=str(script_path.resolve()), type="bind", read_only=True),
        Mount(target="/out", source=str(out_dir.resolve()), type="bind", read_only=False),
    ]
    # -u: unbuffered, so what a script printed before it was killed (deadline, OOM) is in its log.
    command = ["python3", "-I", "-u", "/bilevel/launch.py"]
    if data_dir is not None:
        mounts.append(Mount(target="/data", source=str(data_dir.resolve()), type="bind", read_only=True))
        command += ["--data", "/data"]
    for source, target in ro_mounts:
        if target.startswith("~/"):
            target = posixpath.join(sandbox_home(client, policy, image, log), target[2:])
        mounts.append(Mount(target=target, source=str(Path(source).resolve()), type="bind", read_only=True))
    if harness_lib:
        command += ["--lib", harness_lib]
    command.append("/work/train.py")
    return mounts, command


def _result(trial_id: str, w: supervisor.Watched, sha: str, started: float, deadline: str = "", *,
            training_only: bool = False) -> TrialResult:
    """The watched container's facts, classified: the one place a trial's outcome is decided.

    `deadline` says how the deadline was set (a timeout's reason names it). `training_only`
    (code mode's training container): whatever the script printed is ignored, a summary
    included; it ends ok when it exits 0 in time, and its training time is the supervisor's
    clock, not the script's word. The metric comes later, from the evaluator.
    """
    metrics, problem = w.summary.result()
    if training_only:
        metrics, problem = {"training_seconds": round(w.wall_seconds, 3)}, None
    status, reason = classify(
        exit_code=w.exit_code, oom_killed=w.oom_killed, killed_for=w.killed_for,
        metrics=metrics, summary_problem=problem, deadline=deadline,
    )
    m = dict(metrics) if status == "ok" else {}
    if "peak_mem_mb" not in m and "peak_vram_mb" in m:  # karpathy's train.py names its memory so
        m["peak_mem_mb"] = m["peak_vram_mb"]
    return TrialResult(
        trial_id=trial_id, status=status, reason=reason,
        val_bpb=m.get("val_bpb"), training_seconds=m.get("training_seconds"),
        wall_seconds=round(time.monotonic() - started, 3), peak_mem_mb=m.get("peak_mem_mb"),
        exit_code=w.exit_code, log_tail=w.log.tail_text(), script_sha=sha,
        startup_seconds=w.first_output_at - started if w.first_output_at else None, num_steps=m.get("num_steps"),
    )


def run_trial(
    client: docker.DockerClient,
    policy: Policy,
    *,
    script: str,
    budget_s: float,
    work_dir: Path,
    data_dir: Path | None = None,
    harness_lib: str | None = None,
    ro_mounts: Sequence[tuple[Path, str]] = (),
    trial_id: str | None = None,
    run_id: str | None = None,
    gpu: bool = False,
    cancel: threading.Event | None = None,
    cpuset: str | None = None,
    gpu_ids: list[int] | tuple[int, ...] | None = None,
    training_only: bool = False,
    checkout: Path | None = None,
    grace_s: float | None = None,
    grace_source: str = "",
) -> TrialResult:
    """Run `script` (already edited, or untrusted in code mode) under the policy's limits.

    `training_only`: code mode's training container, whose output is not the metric (`_result`).

    `ro_mounts` are the task's extra read-only (host path, sandbox path) pairs; a sandbox path
    starting with `~/` is placed under the sandbox user's home (`sandbox_home`). `cpuset` and
    `gpu_ids` are a parallel slot's share of the machine (`hardening.container_kwargs`). `checkout`:
    run in that checkout's own trial image (`checkout_image.py`; a stale one is refused), else
    the stock one. `grace_s` replaces the policy's `trial.grace_s` (a checkout run measures it on
    its baseline); `grace_source` says where it came from, for a timeout's reason.
    """
    trial_id = trial_id or new_trial_id()
    log = get_logger(run_id=run_id, trial_id=trial_id)
    image = checkout_image.image_for(client, checkout) if checkout else images.image_for(client, "trial")
    sha = hashlib.sha256(script.encode()).hexdigest()
    script_path, out_dir = _write_inputs(work_dir, script)
    mounts, command = _mounts_and_command(client, policy, image, log, script_path=script_path, out_dir=out_dir,
                                          data_dir=data_dir, harness_lib=harness_lib, ro_mounts=ro_mounts)
    kwargs = hardening.container_kwargs(
        policy, "trial", image.id, command, mounts=mounts, gpu=gpu, cpuset=cpuset, gpu_ids=gpu_ids,
        host_mounts=images.host_mounts(image), runtime=runtimes.runtime_for(client, policy, "trial"),
        labels={hardening.LABEL_RUN: run_id or "", hardening.LABEL_TRIAL: trial_id},
    )
    limits = policy.trial
    grace = float(limits["grace_s"]) if grace_s is None else float(grace_s)
    deadline = budget_s + grace
    why = f"budget {budget_s:g} s + grace {grace:g} s, {grace_source or 'policy trial.grace_s'}"
    log.info("trial_start", budget_s=budget_s, deadline_s=deadline, script_sha=sha[:12])
    t0 = time.monotonic()
    # A unique name: trial ids repeat across runs, and a container the engine lost may linger.
    with _container(client, f"bilevel-trial-{trial_id}-{uuid.uuid4().hex[:8]}", kwargs,
                    f"during trial {trial_id}") as container:
        w = supervisor.watch(
            container, deadline_s=deadline, log_cap=int(limits["log_kb"]) * 1024,
            out_dir=out_dir, out_caps=OutputCaps.from_policy(limits), cancel=cancel,
        )
    if w.exit_code is None and w.killed_for is None:
        raise InfraError(f"the Docker engine lost trial {trial_id} (no exit state)")
    (work_dir / "log.txt").write_text(w.log.text())
    result = _result(trial_id, w, sha, t0, why, training_only=training_only)
    log.info("trial_end", status=result.status, reason=result.reason, val_bpb=result.val_bpb,
             wall_s=result.wall_seconds)
    return result
