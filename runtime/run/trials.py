"""The trial runner: one trial of a run, journaled before and after, retried on engine failures.

Everything that matters is in the journal before it matters: the trial's row is written as
`running` before its container starts, so a run killed mid-trial knows on resume that it must
rerun it, with the same changes. An engine failure (daemon restart, lost container) is not the
trial's fault: that attempt ends `infra` and the trial runs again, up to `INFRA_ATTEMPTS` times.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bilevel.inner import code_edits, edits, tasks
from bilevel.runtime.files import disk_full, nearly_full, no_space
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import GRACE_EVENT, SLOT_EVENT, RunView
from bilevel.runtime.policy import Policy
from bilevel.runtime.run import slots
from bilevel.runtime.run.budgets import Budgets, Controls, Stop
from bilevel.runtime.run.config import RunConfig
from bilevel.runtime.run.slots import Slot
from bilevel.runtime.sandbox import engine, executor
from bilevel.runtime.vocabulary import RunState, TrialKind, TrialMode, TrialStatus

INFRA_ATTEMPTS = 3
# The run's grace, where the task measures it (`Task.measures_grace`): what its baseline spent
# outside the training budget, times GRACE_FACTOR (a proposal may evaluate a larger model), plus
# GRACE_MARGIN_S, and never under the policy's grace_s. Until measured: `trial.first_grace_s`.
GRACE_FACTOR, GRACE_MARGIN_S = 2.0, 30.0


@dataclass(frozen=True)
class Started:
    """An attempt journaled as running, with what its container needs."""

    tid: int
    seq: int
    config: dict
    hypothesis: str
    kind: str
    iteration: int
    script: str
    slot: Slot
    work: Path
    mode: str = TrialMode.PARAMS


def gpu_count(slot: Slot) -> int:
    """GPUs a slot's trial holds, for the GPU-hours budget: `()` is every GPU of the host."""
    if slot.gpus is None:
        return 0
    return len(slot.gpus) or len(slots.host_gpu_ids())


class TrialRunner:
    """Runs the run's trials; `on_start` hears of each attempt as its container is about to start."""

    def __init__(self, *, journal: Journal, policy: Policy, cfg: RunConfig, task: tasks.Task, run_id: str,
                 run_dir: Path, log, budgets: Budgets, controls: Controls, client,
                 on_start: Callable[[dict], None]) -> None:
        self.journal, self.policy, self.cfg, self.task = journal, policy, cfg, task
        self.run_id, self.dir, self.log = run_id, run_dir, log
        self.budgets, self.controls, self.client, self.on_start = budgets, controls, client, on_start
        self.defaults = task.defaults()
        self.trial_inputs = task.trial_inputs()
        self.default_slot = slots.plan(policy, 1)[0]
        self.backend = None   # `--executor ray`: a `RayBackend`, whose `run_trial` is the executor's
        self._local = threading.local()
        self.mode = TrialMode(getattr(cfg, "mode", TrialMode.PARAMS))
        if self.mode == TrialMode.CODE:
            self.code_inputs = task.code_inputs()
            # The per-run secret of the evaluator's orders and cuts: in memory only, never journaled
            # or written where a sandbox could read it (a resume draws a new one; an honest model's
            # score does not depend on it).
            self.secret = secrets.randbits(62)
        self.measured_grace = RunView.read(journal).grace if task.measures_grace else None

    def grace(self) -> tuple[float, str]:
        """The grace a trial gets now, and where it comes from (a timeout's reason says)."""
        if not self.task.measures_grace:
            return float(self.policy.trial["grace_s"]), "policy trial.grace_s"
        g = self.measured_grace
        if g is None:
            return float(self.policy.trial["first_grace_s"]), "policy trial.first_grace_s (before the baseline)"
        return float(g["grace_s"]), (f"measured on the baseline, trial {g['trial_id']}: {g['overhead_s']:g} s "
                                     f"outside the budget x {GRACE_FACTOR:g} + {GRACE_MARGIN_S:g} s")

    def _measure_grace(self, tid: int, kind: str, r: executor.TrialResult) -> None:
        """After the first ok baseline of a task that measures it: the run's grace, journaled."""
        if not self.task.measures_grace or self.measured_grace is not None or kind != TrialKind.BASELINE:
            return
        if r.status != TrialStatus.OK or r.training_seconds is None:
            return
        overhead = round(max(0.0, r.wall_seconds - float(r.training_seconds)), 1)
        policy_grace = float(self.policy.trial["grace_s"])
        grace = max(policy_grace, round(overhead * GRACE_FACTOR + GRACE_MARGIN_S))
        self.measured_grace = {"grace_s": grace, "overhead_s": overhead, "trial_id": tid,
                               "policy_grace_s": policy_grace}
        self.journal.event(GRACE_EVENT, self.measured_grace)
        self.log.info("trial_grace", trial_id=tid, grace_s=grace, overhead_s=overhead)

    def run(self, config: dict, hypothesis: str, *, kind: str, iteration: int, seq: int | None = None,
            slot: Slot | None = None, script: str | None = None, incumbent: str | None = None) -> dict:
        """Run one trial with `config` (the task's constants); returns what the loop needs of it.
        Code mode: `script` is the edited code (None: the task's code-mode script with `config`),
        `incumbent` the code it was edited from (its diff is journaled)."""
        self.check_fits()
        for _attempt in range(INFRA_ATTEMPTS):
            started = self.begin(config, hypothesis, kind=kind, iteration=iteration, seq=seq, slot=slot,
                                 script=script, incumbent=incumbent)
            seq = started.seq
            timer = self._deadline_timer()
            try:
                result = self.settle(started, self.execute(started))
            finally:
                if timer is not None:
                    timer.cancel()
            if result is not None:
                return result
        raise Stop(RunState.FAILED, f"the Docker engine failed {INFRA_ATTEMPTS} times in a row; see the log")

    def check_fits(self) -> None:
        """No trial starts that cannot finish before the deadline, or past the GPU-hours budget."""
        self.budgets.check_trial_fits()
        if self.cfg.max_gpu_hours is not None:  # reads the journal: only when there is a cap
            self.budgets.check_gpu_hours(RunView.read(self.journal).gpu_hours)

    # ---- one attempt in three steps: begin and settle on the journal's thread, execute anywhere --

    def begin(self, config: dict, hypothesis: str, *, kind: str, iteration: int, seq: int | None = None,
              slot: Slot | None = None, script: str | None = None, incumbent: str | None = None) -> Started:
        """Journal the attempt as running (before its container exists) and tell `on_start`."""
        runtime = self.task.runtime_values(budget=self.cfg.budget, seed=self.cfg.seed)
        diff_ref = None
        if self.mode == TrialMode.CODE:
            base = self.task.code_source()
            script = edits.apply(script if script is not None else edits.apply(base, config), runtime)
            diff_ref = self.journal.artifacts.put(code_edits.diff(incumbent or base, script))
        else:
            script = edits.apply(self.task.source(), {**config, **runtime})
        sha = self.journal.artifacts.put(script)  # content-addressed: the ref is the script's sha256
        changes = {k: v for k, v in config.items() if self.defaults.get(k) != v}
        tid = self.journal.start_trial(iteration=iteration, kind=kind, changes=changes,
                                       hypothesis=hypothesis, script_sha=sha, seq=seq,
                                       mode=self.mode if self.mode == TrialMode.CODE else None, diff_ref=diff_ref)
        seq = self.journal.trial(tid)["seq"]
        slot = slot or self.default_slot
        self.journal.event(SLOT_EVENT, {"trial_id": tid, "seq": seq, **slot.to_dict(),
                                        "gpu_count": gpu_count(slot)})
        self.on_start({"seq": seq, "started_monotonic": time.monotonic(), "budget_s": self.cfg.budget,
                       "deadline_s": self.cfg.budget + self.grace()[0],
                       "changes": changes, "slot": slot.index, "share": slot.describe()})
        return Started(tid=tid, seq=seq, config=dict(config), hypothesis=hypothesis, kind=kind,
                       iteration=iteration, script=script, slot=slot,
                       work=self.dir / "trials" / f"{seq:04d}-{tid}", mode=self.mode)

    def execute(self, s: Started) -> executor.TrialResult | executor.InfraError:
        """The container run of one attempt; touches no journal, so it may run in a worker thread."""
        try:
            if s.mode == TrialMode.CODE:
                from bilevel.runtime.evaluation.code_trial import run_code_trial

                return run_code_trial(
                    self._client(), self.policy, script=s.script, budget_s=self.cfg.budget, work_dir=s.work,
                    code_inputs=self.code_inputs, trial_id=str(s.tid), run_id=self.run_id,
                    gpu=s.slot.gpus is not None, cancel=self.controls.cancel_trial, cpuset=s.slot.cpuset,
                    gpu_ids=s.slot.gpus or None, secret=self.secret,
                )
            run_trial = self.backend.run_trial if self.backend is not None else executor.run_trial
            grace_s, grace_source = self.grace()
            return run_trial(
                self._client(), self.policy, script=s.script, budget_s=self.cfg.budget, work_dir=s.work,
                **self.trial_inputs, trial_id=str(s.tid), run_id=self.run_id,
                gpu=s.slot.gpus is not None, cancel=self.controls.cancel_trial,
                cpuset=s.slot.cpuset, gpu_ids=s.slot.gpus or None, grace_s=grace_s, grace_source=grace_source,
            )
        except executor.InfraError as exc:
            return exc

    def settle(self, s: Started, outcome: executor.TrialResult | executor.InfraError) -> dict | None:
        """Journal how the attempt ended; None when the engine failed under it (run it again)."""
        if isinstance(outcome, executor.InfraError):
            if disk_full(outcome) or nearly_full(self.dir):
                # The run stops; the trial reruns on resume, not charged to the engine or the script.
                raise no_space(f"trial {s.tid}'s folder") from outcome
            self.journal.finish_trial(s.tid, status=TrialStatus.INFRA, reason=str(outcome)[:500])
            self.log.warning("trial_infra_failure", trial_id=s.tid, error=str(outcome)[:200])
            self._recover_engine(s.tid)
            return None
        return self._finish(s.tid, s.seq, outcome, s.work)

    def _client(self):
        """The main thread's client; a worker thread gets its own (one HTTP session per thread)."""
        if threading.current_thread() is threading.main_thread():
            return self.client
        if getattr(self._local, "client", None) is None:
            self._local.client = engine.connect()
        return self._local.client

    def _deadline_timer(self) -> threading.Timer | None:
        """Near the deadline the policy decides: "kill" the running trial, or let it "finish"."""
        left = self.budgets.time_left()
        if left is None or self.policy.trial["near_deadline"] != "kill":
            return None
        timer = threading.Timer(max(left, 0), self.controls.hit_deadline)
        timer.daemon = True
        timer.start()
        return timer

    def _recover_engine(self, tid: int) -> None:
        """Reconnect (the daemon may be restarting) and remove what the lost attempt left."""
        self.client = engine.connect(timeout=120, wait_s=60)
        engine.remove_labeled(self.client, [f"bilevel.run={self.run_id}", f"bilevel.trial={tid}"])
        engine.sweep_orphans(self.client)

    def _finish(self, tid: int, seq: int, r: executor.TrialResult, work: Path) -> dict:
        if r.status == "interrupted":
            self.journal.mark_running_trials_interrupted()
            if self.controls.deadline_hit:
                raise Stop(RunState.FINISHED, "deadline reached during a trial; it was killed as the policy says")
            raise Stop(RunState.STOPPED, "stop requested: the running trial was killed (it reruns on resume)")
        if r.status != TrialStatus.OK and nearly_full(self.dir):
            # A trial that failed on a full run folder may have failed for want of space (its log or
            # outputs not written): not charged to the script; the run stops and it reruns on resume.
            raise no_space(f"trial {tid} ended {r.status} with the run folder full")
        log_ref = self.journal.artifacts.put((work / "log.txt").read_bytes())
        self.journal.finish_trial(
            tid, status=r.status, val_bpb=r.val_bpb, training_seconds=r.training_seconds,
            wall_seconds=r.wall_seconds, peak_mem_mb=r.peak_mem_mb, exit_code=r.exit_code,
            log_ref=log_ref, reason=r.reason, checkpoint_sha=r.checkpoint_sha, gate=r.gate,
        )
        self._measure_grace(tid, self.journal.trial(tid)["kind"], r)
        return {"trial_id": tid, "seq": seq, "status": r.status, "val_bpb": r.val_bpb,
                "training_seconds": r.training_seconds, "peak_mem_mb": r.peak_mem_mb, "reason": r.reason,
                "gate": r.gate}
