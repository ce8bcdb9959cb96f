"""One code-mode trial: the training container, then the gates and the trusted evaluator.

1. The edited script trains in a hardened trial container (`executor.run_trial`, training only):
   the training split alone is mounted, with the training-side harness; whatever it prints is
   ignored, and its training time is the supervisor's clock.
2. The host checks what it left in /out: the checkpoint's header (format, size, parameter cap)
   and the config, read as data (no link followed), and copies them into a folder of its own.
3. The model container (`channel`) gets those copies and the script, and no data; the evaluator
   (`evaluator`) sends it the validation inputs and computes val_bpb from its logits.

The model container starts `prestart_s` before the training's budget ends (`EarlyModel`), so its
start-up (the engine, Python, torch) overlaps the training's last seconds instead of following
it; it reads the model's files only once the host has put them in place and says so.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from docker.errors import DockerException

from bilevel.runtime.evaluation import channel, evaluator, gates
from bilevel.runtime.evaluation.gates import GateFailure
from bilevel.runtime.logs import get_logger
from bilevel.runtime.policy import Policy
from bilevel.runtime.sandbox import executor, hardening
from bilevel.runtime.vocabulary import Gate, TrialMode, TrialStatus

LIB = "/bilevel/code"      # where the training container finds its harness and the checkpoint format
HERE = Path(__file__).resolve().parent


def _training_mounts(harness: Path) -> list[tuple[Path, str]]:
    return [(harness, f"{LIB}/harness.py"), (HERE / "checkpoint_format.py", f"{LIB}/checkpoint_format.py")]


def take_outputs(out_dir: Path, dest: Path, limits: dict) -> str:
    """The checkpoint and config the training left, checked and copied into `dest` (the host's
    own files, which the model container mounts); the checkpoint's sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "model.safetensors"
    gates.checkpoint(str(ckpt), max_mb=float(limits["checkpoint_mb"]), max_params=int(limits["max_params"]))
    # Invariant 8: read as data through a descriptor that never follows a link, capped.
    data = gates.read_plain(str(ckpt), int(float(limits["checkpoint_mb"]) * 2**20))
    cfg = gates.config(gates.read_plain(str(out_dir / "model.json"), int(limits["config_kb"]) * 1024))
    (dest / "model.safetensors").write_bytes(data)
    (dest / "model.json").write_text(json.dumps(cfg))
    return hashlib.sha256(data).hexdigest()


class EarlyModel:
    """The model container, started on a thread `delay` seconds from now (or at once by `take`);
    `cancel` stops it from starting, or removes it if it started and was not taken."""

    def __init__(self, make: Callable[[], channel.ModelContainer], delay: float) -> None:
        self._now, self._cancelled, self._taken = threading.Event(), False, False
        self._model: channel.ModelContainer | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(make, delay), name="early-model", daemon=True)
        self._thread.start()

    def _start(self, make: Callable[[], channel.ModelContainer], delay: float) -> None:
        self._now.wait(delay)
        if self._cancelled:
            return
        try:
            self._model = make()
        except BaseException as exc:  # noqa: BLE001 - raised again by take()
            self._error = exc

    def take(self) -> channel.ModelContainer:
        """The started container; an engine failure is `executor.InfraError` (not the candidate's)."""
        self._now.set()
        self._thread.join()
        self._taken = True
        if isinstance(self._error, (DockerException, requests.RequestException)):
            raise executor.InfraError(f"the model container did not start: {self._error}") from self._error
        if self._error is not None:
            raise self._error
        return self._model

    def cancel(self) -> None:
        self._cancelled = True
        self._now.set()
        self._thread.join()
        if self._model is not None and not self._taken:
            self._model.close()


def run_code_trial(
    client, policy: Policy, *, script: str, budget_s: float, work_dir: Path, code_inputs: dict[str, Any],
    trial_id: str | None = None, run_id: str | None = None, gpu: bool = False,
    cancel: threading.Event | None = None, cpuset: str | None = None,
    gpu_ids: list[int] | tuple[int, ...] | None = None, secret: int | None = None,
) -> executor.TrialResult:
    """Train `script` (untrusted), then evaluate its model; `secret` seeds the orders and cuts
    (a fresh one when not given). An engine failure raises `executor.InfraError`."""
    trial_id = trial_id or executor.new_trial_id()
    log = get_logger(run_id=run_id, trial_id=trial_id)
    limits = policy.evaluation
    t0 = time.monotonic()
    folder = work_dir / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(script)
    labels = {hardening.LABEL_RUN: run_id or "", hardening.LABEL_TRIAL: trial_id}
    files = channel.ModelFiles(folder=folder, harness=code_inputs["harness"])
    early = EarlyModel(lambda: channel.ModelContainer(client, policy, files, labels=labels, cpuset=cpuset),
                       delay=max(0.0, budget_s - float(limits["prestart_s"])))
    try:
        train = replace(executor.run_trial(
            client, policy, script=script, budget_s=budget_s, work_dir=work_dir,
            data_dir=code_inputs["train_dir"], harness_lib=LIB, ro_mounts=_training_mounts(code_inputs["harness"]),
            trial_id=trial_id, run_id=run_id, gpu=gpu, cancel=cancel, cpuset=cpuset, gpu_ids=gpu_ids,
            training_only=True,
        ), mode=TrialMode.CODE)
        if train.status != TrialStatus.OK:
            return train
        try:
            sha = take_outputs(work_dir / "out", folder, limits)
        except GateFailure as exc:
            return _invalid(train, exc.gate, str(exc), t0, None)
        model = early.take()
    finally:
        early.cancel()   # nothing once taken; else the early container never starts, or goes
    val = Path(code_inputs["val_path"]).read_bytes()   # the host's evaluator alone reads it
    with model:
        model.arm(time.monotonic() + float(limits["deadline_s"]))
        result = evaluator.run(model, val, evaluator.Spec(**code_inputs["spec"]),
                               secret=secrets.randbits(62) if secret is None else secret,
                               causality_batches=int(limits["causality_batches"]), tolerance=float(limits["tolerance"]))
    log.info("evaluation_end", gate=result.gate, val_bpb=result.val_bpb, seconds=result.seconds,
             checkpoint_sha=sha[:12])
    if result.gate is not None:
        return _invalid(train, Gate(result.gate), result.reason, t0, sha, result.seconds)
    return replace(train, val_bpb=result.val_bpb, wall_seconds=round(time.monotonic() - t0, 3),
                   checkpoint_sha=sha, evaluation_seconds=result.seconds)


def _invalid(train: executor.TrialResult, gate: Gate, reason: str, t0: float, sha: str | None,
             seconds: dict | None = None) -> executor.TrialResult:
    return replace(train, status=TrialStatus.INVALID, reason=reason[:500], gate=str(gate), val_bpb=None,
                   wall_seconds=round(time.monotonic() - t0, 3), checkpoint_sha=sha, evaluation_seconds=seconds)

