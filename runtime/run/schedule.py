"""A bilevel run: open or resume its journal, then the schedule of the three levels.

Everything that matters is in the journal before it matters: a trial row is written before
its container starts, an iteration's record when it completes, every LLM and mechanism call
as it happens. So a run can be killed at any point and resumed: finished trials are never
re-run, an interrupted one is rerun with its recorded changes, and the incumbent, the trace
and the mechanisms (replayed from their journaled calls) come back as they were.

`Run.execute` builds every part first (journal, budgets, trial runner, LLM, mechanisms, the
loop's state rebuilt from `RunView`) and only then hands them, whole, to a `Schedule`, which
runs the baseline and the iterations. Observers (the live display, results.tsv) hear of each
step as a `Progress`; the run imports none of them.
"""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bilevel.inner import tasks
from bilevel.inner.acceptance import noise_floor
from bilevel.inner.loop import LoopState, Step, iterate
from bilevel.inner.proposer import OfflineProposer, proposal_messages, proposal_schema
from bilevel.runtime import logs
from bilevel.runtime.files import DISK_FULL_EXIT, disk_full
from bilevel.runtime.journal.records import Trial
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.llm.parsing import fence
from bilevel.runtime.policy import Policy
from bilevel.runtime.run import levels
from bilevel.runtime.run.budgets import Budgets, Controls, Stop
from bilevel.runtime.run.code_mode import CodeMode
from bilevel.runtime.run.config import RunConfig, config_for, nothing_to_do
from bilevel.runtime.run.llm_use import RunLLM
from bilevel.runtime.run.mechanisms import RunMechanisms
from bilevel.runtime.run.parallel import ParallelLoop
from bilevel.runtime.run.slots import Slot, available_cpus, plan
from bilevel.runtime.run.trials import TrialRunner
from bilevel.runtime.sandbox import engine
from bilevel.runtime.vocabulary import Level, LLMAnswer, RunState, TrialKind, TrialMode


@dataclass(frozen=True)
class Progress:
    """What an observer hears after each step: the journal's view, plus what only the live run knows."""

    view: RunView
    iteration: int
    iterations: int
    budgets: dict                     # time, tokens and USD left
    trial: dict | None = None         # the attempt whose container is starting, if that is the step
    slots: tuple[dict, ...] = ()      # parallel slots: each busy slot's attempt (as `trial`), by slot
    waiting: str | None = None        # parallel slots: what the orchestrator waits for now
    llm_wait: dict | None = None      # the LLM round being waited for (RunLLM.waiting), live


Observer = Callable[[Progress], None]


def loop_state(view: RunView, task: tasks.Task, cfg: RunConfig) -> LoopState:
    """The loop's state rebuilt from the journal (empty for a new run): the same on resume as live."""
    vals = [t.val_bpb for t in view.baselines]
    if cfg.baseline_val_bpb is not None:  # a shared baseline: this run has no baseline trials
        vals = [cfg.baseline_val_bpb]
    best = view.best_val_bpb
    state = LoopState(space=task.space, incumbent=dict(task.defaults()),
                      best=best if best is not None else float("inf"),
                      baseline=vals[0] if vals else float("inf"),
                      noise=noise_floor(vals) if cfg.noise is None else cfg.noise,
                      active=sorted(task.space))
    for rec in view.iterations:  # in decision order; with parallel slots not in iteration order
        state.iteration = max(state.iteration, rec.iteration)
        if rec.kept:
            state.incumbent = rec.config
        state.history.append(rec.history_entry())
    for d in view.decisions_at(Level.STRATEGY):
        state.active, state.frozen, state.guidance = d.payload["active"], d.payload["frozen"], d.payload["guidance"]
    return state


@dataclass
class Schedule:
    """The levels in order: the baseline, then iterations, with Level 1.5 every K of them and
    Level 2 every M Level 1.5 cycles (and once before the first iteration)."""

    cfg: RunConfig
    journal: Journal
    budgets: Budgets
    trials: TrialRunner
    llm: RunLLM
    mechs: RunMechanisms
    offline: OfflineProposer
    state: LoopState
    log: object
    observers: Sequence[Observer] = field(default_factory=tuple)
    slots: Sequence[Slot] = ()        # more than one: `ParallelLoop` runs the iterations
    live: dict[int, dict] = field(default_factory=dict)   # slot -> its running attempt (parallel)
    waiting: str | None = None
    llm_answer: LLMAnswer | None = None   # what became of this iteration's LLM proposal
    code: object = None               # `--mode code`: a `code_mode.CodeMode`, which runs the iterations

    def progress(self, trial: dict | None = None) -> None:
        if trial is not None and len(self.slots) > 1:
            self.live[trial.get("slot", 0)] = trial
        if not self.observers:
            return
        view = RunView.read(self.journal)
        live = tuple(self.live[k] for k in sorted(self.live)) if len(self.slots) > 1 else ()
        p = Progress(view=view, iteration=self.state.iteration, iterations=self.cfg.iterations,
                     budgets=self.budgets.left(view.llm_totals), trial=trial, slots=live, waiting=self.waiting,
                     llm_wait=self.llm.waiting)
        for observe in self.observers:
            observe(p)

    def propose(self, state: LoopState, sections: list[dict]) -> dict | None:
        proposal, answer = self.ask(state, sections)
        if answer is not None:
            self.llm_answer = answer
        return proposal

    def ask(self, state: LoopState, sections: list[dict]) -> tuple[dict | None, LLMAnswer | None]:
        """The proposer's answer and what became of the LLM's (None offline). Touches no shared
        state: the asynchronous loop calls it from worker threads, several at once."""
        if not self.llm.online:
            return self.offline.propose(state.incumbent, state.active, state.history), None
        msgs = proposal_messages(space=state.space, active=state.active, incumbent=state.incumbent,
                                 best=state.best, history=state.history, sections=sections,
                                 guidance=state.guidance, fence=fence, pending=state.pending)
        proposal = self.llm.chat_json(msgs, Level.INNER, "propose", schema=proposal_schema(state.space, state.active),
                                      schema_name="proposal")
        return proposal, LLMAnswer.FAILED if proposal is None else LLMAnswer.USABLE

    def judge_llm_answer(self, record: dict) -> None:
        """Journal what became of this iteration's LLM proposal (`llm`, None when none was asked):
        refused when the candidate checks turned it away."""
        answer, self.llm_answer = self.llm_answer, None
        if answer == LLMAnswer.USABLE and any(r.get("source") == "proposer" for r in record["rejected"]):
            answer = LLMAnswer.REFUSED
        record["llm"] = answer

    def rebuild_state(self) -> None:
        self.state = loop_state(RunView.read(self.journal), self.trials.task, self.cfg)

    def baseline(self) -> None:
        if self.cfg.baseline_val_bpb is None:  # else a shared baseline: nothing to measure here
            view = RunView.read(self.journal)
            done = [t for t in view.finished if t.is_baseline]
            pending = [t for t in view.to_rerun if t.is_baseline]
            defaults = self.trials.defaults
            slot = self.slots[0] if self.slots else None
            for t in pending:
                self.trials.run(defaults, "baseline", kind=TrialKind.BASELINE, iteration=0, seq=t.seq, slot=slot)
            for _ in range(self.cfg.baseline_repeats - len(done) - len(pending)):
                self.trials.run(defaults, "baseline", kind=TrialKind.BASELINE, iteration=0, slot=slot)
        self.rebuild_state()
        self.progress()
        if self.cfg.baseline_val_bpb is None and self.state.baseline == float("inf"):
            raise Stop(RunState.FAILED, "the baseline trial did not end ok; see its log in the report")

    def resume_iteration(self) -> dict | None:
        """An iteration whose trial was interrupted: rerun that trial, then finish the iteration.
        One whose trial finished but whose record was never written (a crash or a full disk came
        between them) is finished on that trial's journaled result, never run twice."""
        view = RunView.read(self.journal)
        recorded = {r.iteration for r in view.iterations}
        for t in view.finished:
            if t.kind == TrialKind.PROPOSAL and t.iteration > self.state.iteration and t.iteration not in recorded:
                self.state.iteration = t.iteration - 1
                chosen = {"changes": t.changes, "hypothesis": t.hypothesis or "", "source": "resumed"}
                return self.iterate(chosen=chosen, done=t)
        for t in view.to_rerun:
            if t.kind == TrialKind.PROPOSAL:
                self.state.iteration = t.iteration - 1
                chosen = {"changes": t.changes, "hypothesis": t.hypothesis or "", "source": "resumed"}
                return self.iterate(chosen=chosen, seq=t.seq)
        return None

    def iterate(self, chosen: dict | None = None, seq: int | None = None, done: Trial | None = None) -> dict:
        if self.code is not None:  # `--mode code`: the proposal edits the code (runtime/run/code_mode.py)
            return self.code.iterate(self, seq=seq, done=done)
        it = self.state.iteration + 1
        self.mechs.iteration = it
        kinds = iter([TrialKind.PROPOSAL, TrialKind.REPEAT])
        seqs = iter([seq])
        finished = iter([done] if done is not None else [])

        def run_trial(config: dict, hypothesis: str) -> dict:
            t = next(finished, None)
            if t is not None:  # already run and journaled: its result, not a second run
                next(kinds), next(seqs, None)
                return {"trial_id": t.trial_id, "seq": t.seq, "status": t.status, "val_bpb": t.val_bpb,
                        "training_seconds": t.training_seconds, "peak_mem_mb": t.peak_mem_mb, "reason": t.reason}
            return self.trials.run(config, hypothesis, kind=next(kinds), iteration=it, seq=next(seqs, None))

        step = Step(mechs=self.mechs, propose=self.propose, run_trial=run_trial,
                    offline=self.offline, mode=self.cfg.acceptance)
        self.llm_answer = None
        record = iterate(self.state, step, chosen=chosen)
        self.judge_llm_answer(record)
        self.journal.record_iteration(record)
        self.progress()  # after the decision, so the display reports kept or discarded
        self.log.info("iteration", iteration=it, status=record["status"], val_bpb=record["val_bpb"],
                      kept=record["kept"], source=record["source"])
        return record

    def outer_levels(self, done: RunView) -> None:
        """Level 1.5 and Level 2 where the schedule puts them and the journal has none yet."""
        it, k, m = self.state.iteration, self.cfg.strategy_every, self.cfg.research_every
        levels_on = self.cfg.levels
        if it > 0 and it % k == 0:
            # Each level checked on its own: a crash between the two must not skip the second.
            if Level.STRATEGY in levels_on and not done.decided(Level.STRATEGY, it):
                levels.strategy_cycle(self.state, self.llm, self.journal, self.cfg.min_active)
            if Level.RESEARCH in levels_on and (it // k) % m == 0 and not done.decided(Level.RESEARCH, it):
                self.research(it // (k * m))
        if it == 0 and Level.RESEARCH in levels_on and not done.decided(Level.RESEARCH, 0):
            self.research(0)

    def research(self, cycle: int) -> None:
        levels.research_session(self.state, cycle, llm=self.llm, mechs=self.mechs, journal=self.journal,
                                seed=self.cfg.seed)

    def asynchronous(self) -> bool:
        """Whether `ParallelLoop` runs the iterations: several slots, or one slot with an LLM to
        wait for and `trial.draft_ahead` (the next proposal is drafted while the trial runs). Code
        mode runs one trial at a time, in its own loop (`code_mode.CodeMode`)."""
        if self.code is not None:
            return False
        return len(self.slots) > 1 or (self.llm.online and bool(self.trials.policy.trial["draft_ahead"]))

    def loop(self) -> None:
        self.baseline()
        if self.asynchronous():
            ParallelLoop(self, list(self.slots)).run()
        self.resume_iteration()
        while self.state.iteration < self.cfg.iterations:
            self.outer_levels(RunView.read(self.journal))
            self.llm.check_unusable(RunView.read(self.journal), self.budgets.policy["llm"]["max_unusable"])
            self.budgets.check_trial_fits()
            self.iterate()
            self.llm.check_unusable(RunView.read(self.journal), self.budgets.policy["llm"]["max_unusable"])
        raise Stop(RunState.FINISHED, f"{self.cfg.iterations} iterations done")


class Run:
    """One run folder: `execute` runs or resumes it to its end and returns the exit code."""

    def __init__(self, cfg: RunConfig, run_dir: Path, policy: Policy, observers: Sequence[Observer] = (),
                 task: tasks.Task | None = None) -> None:
        self.cfg, self.dir, self.policy = cfg, run_dir, policy
        self.task = task  # loaded and bound by the caller (`cfg.load_task()`), else loaded here
        # Checked before the journal opens: a --parallel the machine cannot share out is refused.
        self.slots = plan(policy, cfg.parallel or int(policy.trial["parallel"]), cluster=cfg.executor == "ray")
        self.observers = tuple(observers)
        self.controls = Controls()

    def open(self) -> tuple[Journal, str, dict] | str:
        """The journal, the run id and the config to run with; or a message when there is nothing to do."""
        self.dir.mkdir(parents=True, exist_ok=True)
        journal = Journal.open(self.dir)
        try:
            run = RunView.read(journal).run
            config = config_for(run, self.cfg)
            if run is None:
                # Unique on this daemon: containers are labelled with it, and an infra retry removes
                # the lost trial's containers by it, so two runs started in one second must differ.
                run_id = f"{self.dir.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
                journal.init_run(run_id, config, self.policy.data)
                return journal, run_id, config
            message = nothing_to_do(run, config)
            if message:
                journal.close()
                return message
            if config != run.config:
                journal.update_config(config, note="resume with allowed changes")
            return journal, run.run_id, config
        except BaseException:
            journal.close()
            raise

    def execute(self) -> int:
        """Run or resume to the end; returns the process exit code."""
        opened = self.open()
        if isinstance(opened, str):
            print(opened)
            return 0
        journal, run_id, config = opened
        logs.configure(path=self.dir / "log.jsonl")
        log = logs.get_logger(run_id=run_id)
        journal.set_state(RunState.RUNNING, "started" if not journal.trials() else "resumed")
        interrupted = journal.mark_running_trials_interrupted()
        mechs = None
        schedule = None
        backend = None
        try:
            client = engine.connect()
            engine.sweep_orphans(client)
            task = self.task or self.cfg.load_task()
            budgets = Budgets(self.cfg, config, self.policy, self.controls)
            mechs = RunMechanisms(client, self.policy, journal, run_id, self.cfg.seed)
            schedule = self.build(journal, run_id, log, client, task, budgets, mechs)
            backend = schedule.trials.backend = self._backend()
            if backend is not None:   # every node's daemon sweeps its own orphans (a resume after kill -9)
                swept = {node: names for node, names in backend.sweep_nodes().items() if names}
                if swept:
                    journal.event("swept_orphans", {"nodes": swept})
                    log.warning("swept_orphans_on_nodes", nodes=swept)
            mechs.restore()
            log.info("run_start", interrupted=interrupted, llm=self.cfg.llm, levels=self.cfg.levels)
            schedule.loop()
        except Stop as stop:
            journal.set_state(stop.state, stop.reason)
            log.info("run_end", state=stop.state, reason=stop.reason)
            print(f"run {run_id}: {stop.state} ({stop.reason})")
            return 0 if stop.state in (RunState.FINISHED, RunState.STOPPED) else 1
        except BaseException as exc:
            if disk_full(exc):
                return self._stop_disk_full(journal, log, run_id, exc)
            state = RunState.STOPPED if isinstance(exc, KeyboardInterrupt | SystemExit) else RunState.FAILED
            journal.set_state(state, f"{exc.__class__.__name__}: {exc}"[:500])
            raise
        finally:
            if mechs is not None:
                mechs.close()
            if backend is not None:
                backend.close()
            try:
                self._last_word(journal, schedule)
            except Exception as exc:
                if not disk_full(exc):
                    raise
                print("bilevel: results.tsv not updated: the run folder's filesystem is full", file=sys.stderr)
            journal.close()
        return 0

    def _backend(self):
        """`--executor ray`: the Ray backend (a local instance on 127.0.0.1 without --ray-address)."""
        if self.cfg.executor != "ray":
            return None
        from bilevel.runtime.sandbox.ray_backend import RayBackend

        return RayBackend(self.cfg.ray_address, num_cpus=len(available_cpus()))

    def _stop_disk_full(self, journal: Journal, log, run_id: str, exc: BaseException) -> int:
        """A full run folder stops the run cleanly: every journal write is a transaction, so what
        failed left nothing half-written, and a trial cut short reruns on resume. The stop is
        journaled where SQLite still has room; else the journal says `running` and a resume
        treats it as an interrupted run, which comes to the same."""
        reason = (f"the run folder's filesystem is full (ENOSPC: {exc})"[:400]
                  + f"; free space, then `bilevel resume {self.dir}`")
        try:
            journal.mark_running_trials_interrupted()
            journal.set_state(RunState.STOPPED, reason)
        except Exception as again:
            if not disk_full(again):
                raise
        log.error("run_disk_full", error=str(exc)[:300])
        print(f"run {run_id}: stopped ({reason})", file=sys.stderr)
        return DISK_FULL_EXIT

    def _last_word(self, journal: Journal, schedule: Schedule | None) -> None:
        """However the run ended, the observers (results.tsv, the display) see its final journal."""
        if schedule is not None:
            schedule.progress()
            return
        view = RunView.read(journal)
        p = Progress(view=view, iteration=max((r.iteration for r in view.iterations), default=0),
                     iterations=self.cfg.iterations, budgets={})
        for observe in self.observers:
            observe(p)

    def build(self, journal: Journal, run_id: str, log, client, task: tasks.Task, budgets: Budgets,
                  mechs: RunMechanisms) -> Schedule:
        """Every part of the run, built whole before the first step."""
        holder: list[Schedule] = []

        def on_start(trial: dict) -> None:
            if holder:
                holder[0].progress(trial=trial)

        trials = TrialRunner(journal=journal, policy=self.policy, cfg=self.cfg, task=task, run_id=run_id,
                             run_dir=self.dir, log=log, budgets=budgets, controls=self.controls, client=client,
                             on_start=on_start)
        llm = RunLLM(self.cfg, journal, budgets, run_id, log, iteration=lambda: holder[0].state.iteration
                     if holder else None)
        # The display hears of an LLM round as it starts and ends; only from the main thread, the
        # journal's one reader and writer (a parallel run drafts proposals in a worker thread).
        llm.on_wait = lambda: holder[0].progress() if holder and threading.current_thread() is \
            threading.main_thread() else None
        schedule = Schedule(cfg=self.cfg, journal=journal, budgets=budgets, trials=trials, llm=llm, mechs=mechs,
                            offline=OfflineProposer(task.space, self.cfg.seed + len(journal.trials())),
                            state=loop_state(RunView.read(journal), task, self.cfg), log=log,
                            observers=self.observers, slots=self.slots)
        if self.cfg.mode == TrialMode.CODE:
            schedule.code = CodeMode(schedule, task)
        holder.append(schedule)
        return schedule

    def install_signals(self) -> None:
        """First SIGINT/SIGTERM: stop gracefully (the policy decides the running trial's fate).
        Second: stop at once; the journal stays consistent and the trial reruns on resume."""
        def handler(signum, frame):
            if self.controls.stop_requested.is_set():
                raise SystemExit(128 + signum)
            self.controls.stop_requested.set()
            if self.policy.trial["near_deadline"] == "kill":
                self.controls.cancel_trial.set()
            print(f"\nbilevel: stopping after signal {signum}; send it again to stop at once", flush=True)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
