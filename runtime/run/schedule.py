"""A bilevel run: the supervisor that owns the journal, the budgets and the three levels.

Everything that matters is in the journal before it matters: a trial row is written before
its container starts, an iteration's record when it completes, every LLM and mechanism call
as it happens. So a run can be killed at any point and resumed: finished trials are never
re-run, an interrupted one is rerun with its recorded changes, and the incumbent, the trace
and the mechanisms (replayed from their journaled calls) come back as they were.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bilevel.inner import edits, tasks
from bilevel.inner.acceptance import noise_floor
from bilevel.inner.loop import LoopState, Step, iterate
from bilevel.inner.proposer import OfflineProposer, proposal_messages
from bilevel.outer import portfolio, research, strategy
from bilevel.runtime import logs
from bilevel.runtime.journal.store import Journal, diff_config
from bilevel.runtime.llm.client import Budget, BudgetExceeded, LLMClient, LLMConfig, LLMError, fence
from bilevel.runtime.outputs.report import results_tsv
from bilevel.runtime.policy import Policy
from bilevel.runtime.run.mechanisms import RunMechanisms
from bilevel.runtime.sandbox import engine, executor

LEVELS = ("1", "1.5", "2")
INFRA_ATTEMPTS = 3


@dataclass
class RunConfig:
    """The settings that define a run; stored in the journal and checked again on resume."""

    task: str = "tinygpt"
    llm: str = "offline"
    levels: list[str] = field(default_factory=lambda: list(LEVELS))
    iterations: int = 12
    budget: float = 30.0
    hours: float | None = None
    max_tokens: int | None = None
    max_usd: float | None = None
    acceptance: str = "strict"
    strategy_every: int = 3          # Level 1.5 every K iterations
    research_every: int = 2          # Level 2 every M Level-1.5 cycles
    min_active: int = 3
    baseline_repeats: int = 1
    seed: int = 0
    llm_base_url: str | None = None
    offline_fallback: bool = False
    policy: str | None = None
    # Set by `bilevel ablate`: a baseline (mean of repeated baseline trials) and its noise (their
    # standard deviation), measured once elsewhere and shared by every group run, so no run has its
    # own, noisier baseline. Part of the config: a resume that changes them is refused.
    baseline_val_bpb: float | None = None
    noise: float | None = None
    # A task from outside the package (`--task karpathy --repo PATH`): the checkout and its data
    # cache, resolved, and the sha256 of the files that define its trials, taken again on every
    # resume, so a resume after the checkout changed is refused, naming the file. Stored only when
    # set (`to_dict`), so the configs of bundled-task runs, and their folder names, stay as they were.
    repo: str | None = None
    cache: str | None = None
    task_files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The config as the journal stores it."""
        d = asdict(self)
        for key in ("repo", "cache", "task_files"):
            if not d[key]:
                del d[key]
        return d

    def bind(self, task: tasks.Task) -> tasks.Task:
        """Take the task's location and file hashes; refuse a budget the task cannot honour."""
        task.check_budget(self.budget)
        for key, value in task.locator().items():
            setattr(self, key, value)
        self.task_files = task.fingerprint()
        return task

    def load_task(self) -> tasks.Task:
        return self.bind(tasks.resolve(self.task, self.repo, self.cache))

    def validate(self) -> None:
        bad = [lv for lv in self.levels if lv not in LEVELS]
        if bad or "1" not in self.levels:
            raise ValueError(f"--levels: {','.join(self.levels)} must include 1 and be among {LEVELS}")
        if self.acceptance not in ("strict", "noise-aware"):
            raise ValueError("--acceptance must be strict or noise-aware")
        for name in ("strategy_every", "research_every", "baseline_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.iterations < 0:  # 0: only the baseline trials (how `bilevel ablate` measures the noise floor)
            raise ValueError("--iterations must be at least 0")
        if self.budget <= 0:
            raise ValueError("--budget must be positive")

    def identity(self) -> str:
        """A short hash of the settings a resume may not change, naming the default run folder."""
        keep = {k: v for k, v in self.to_dict().items()
                if k not in ("hours", "iterations", "max_tokens", "max_usd", "offline_fallback")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:8]


def default_run_dir(cfg: RunConfig) -> Path:
    levels = "".join(lv.replace(".", "") for lv in cfg.levels)
    return Path("runs") / f"{cfg.task}-L{levels}-s{cfg.seed}-{cfg.identity()}"


class Stop(Exception):
    """Raised inside the loop to end the run with a state and a reason."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(reason)
        self.state, self.reason = state, reason


class Run:
    def __init__(self, cfg: RunConfig, run_dir: Path, policy: Policy, display=None,
                 task: tasks.Task | None = None) -> None:
        self.cfg, self.dir, self.policy = cfg, run_dir, policy
        self.bound_task = task  # loaded and bound by the caller (`cfg.load_task()`), else loaded here
        self.display = display
        self.stop_requested = threading.Event()   # first signal: stop after/at the current trial
        self.cancel_trial = threading.Event()     # set when the policy says to kill the trial
        self.deadline_hit = False

    def _deadline_hit(self) -> None:
        self.deadline_hit = True
        self.cancel_trial.set()

    # ---- opening and resuming ---------------------------------------------------------------

    def open(self) -> str | None:
        """Open or create the journal. Returns a message when there is nothing to do."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal.open(self.dir)
        run = self.journal.run()
        config = self.cfg.to_dict()
        if run is None:
            self.run_id = f"{self.dir.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
            if self.cfg.hours is not None:
                config["deadline"] = (datetime.now(UTC) + timedelta(hours=self.cfg.hours)).isoformat()
            self.journal.init_run(self.run_id, config, self.policy.data)
            self.config = config
            return None
        self.run_id = run["run_id"]
        old = run["config"]
        if old.get("deadline") and (self.cfg.hours is None or self.cfg.hours == old["hours"]):
            config["deadline"], config["hours"] = old["deadline"], old["hours"]
        elif self.cfg.hours is not None:
            # The deadline counts from the run's start, whenever it is resumed.
            start = datetime.fromisoformat(old["deadline"]) - timedelta(hours=old["hours"]) \
                if old.get("deadline") else datetime.fromisoformat(run["created_at"])
            config["deadline"] = (start + timedelta(hours=self.cfg.hours)).isoformat()
        refused = diff_config(old, config)
        files = [name.removeprefix("task_files.") for name in refused if name.startswith("task_files")]
        if files:
            raise ValueError(f"cannot resume run {self.run_id}: the task's {', '.join(files)} changed since "
                             "the run started; restore it, or start a new run")
        if refused:
            raise ValueError(f"cannot resume run {self.run_id}: changed setting(s) {', '.join(refused)} "
                             "(only a later deadline or bigger budgets may change)")
        if run["state"] == "finished" and config == old:
            return f"run {self.run_id} has already finished ({run['state_reason']}); nothing to do"
        if config != old:
            self.journal.update_config(config, note="resume with allowed changes")
        self.config = config
        return None

    # ---- budgets ----------------------------------------------------------------------------

    def deadline(self) -> datetime | None:
        d = self.config.get("deadline")
        return datetime.fromisoformat(d) if d else None

    def time_left(self) -> float | None:
        d = self.deadline()
        return None if d is None else (d - datetime.now(UTC)).total_seconds()

    def check_trial_fits(self) -> None:
        """A trial that cannot finish its training inside the deadline is not started."""
        left = self.time_left()
        need = self.cfg.budget + float(self.policy.trial["startup_s"])
        if left is not None and left < need:
            raise Stop("finished", f"deadline: {max(left, 0):.0f} s left, a trial needs up to {need:.0f} s")
        if self.stop_requested.is_set():
            raise Stop("stopped", "stop requested (signal)")

    # ---- trials -----------------------------------------------------------------------------

    def trial(self, config: dict, hypothesis: str, *, kind: str, iteration: int, seq: int | None = None) -> dict:
        """Run one trial with journaling before and after; infrastructure failures are retried."""
        self.check_trial_fits()
        values = {**config, **self.task.runtime_values(budget=self.cfg.budget, seed=self.cfg.seed)}
        script = edits.apply(self.task.source(), values)
        sha = self.journal.artifacts.put(script)  # content-addressed: the ref is the script's sha256
        changes = {k: v for k, v in config.items() if self.defaults.get(k) != v}
        for _attempt in range(INFRA_ATTEMPTS):
            tid = self.journal.start_trial(iteration=iteration, kind=kind, changes=changes,
                                           hypothesis=hypothesis, script_sha=sha, seq=seq)
            seq = self.journal.trial(tid)["seq"]
            self.show(trial={"seq": seq, "started_monotonic": time.monotonic(), "budget_s": self.cfg.budget,
                             "deadline_s": self.cfg.budget + float(self.policy.trial["grace_s"]),
                             "changes": changes})
            # Near the deadline the policy decides: "kill" the running trial, or let it "finish".
            left = self.time_left()
            timer = None
            if left is not None and self.policy.trial["near_deadline"] == "kill":
                timer = threading.Timer(max(left, 0), self._deadline_hit)
                timer.daemon = True
                timer.start()
            try:
                r = executor.run_trial(
                    self.client, self.policy, script=script, budget_s=self.cfg.budget,
                    work_dir=self.dir / "trials" / f"{seq:04d}-{tid}", **self.trial_inputs,
                    trial_id=str(tid), run_id=self.run_id,
                    gpu=self.policy.gpu_ids() is not None, cancel=self.cancel_trial,
                )
            except executor.InfraError as exc:
                self.journal.finish_trial(tid, status="infra", reason=str(exc)[:500])
                self.log.warning("trial_infra_failure", trial_id=tid, error=str(exc)[:200])
                self.client = engine.connect(timeout=120, wait_s=60)
                engine.remove_labeled(self.client, [f"bilevel.run={self.run_id}", f"bilevel.trial={tid}"])
                engine.sweep_orphans(self.client)
                continue
            finally:
                if timer is not None:
                    timer.cancel()
            if r.status == "interrupted":
                self.journal.mark_running_trials_interrupted()
                if self.deadline_hit:
                    raise Stop("finished", "deadline reached during a trial; it was killed as the policy says")
                raise Stop("stopped", "stop requested: the running trial was killed (it reruns on resume)")
            log_ref = self.journal.artifacts.put((self.dir / "trials" / f"{seq:04d}-{tid}" / "log.txt").read_bytes())
            self.journal.finish_trial(
                tid, status=r.status, val_bpb=r.val_bpb, training_seconds=r.training_seconds,
                wall_seconds=r.wall_seconds, peak_mem_mb=r.peak_mem_mb, exit_code=r.exit_code,
                log_ref=log_ref, reason=r.reason,
            )
            return {"trial_id": tid, "seq": seq, "status": r.status, "val_bpb": r.val_bpb,
                    "training_seconds": r.training_seconds, "peak_mem_mb": r.peak_mem_mb, "reason": r.reason}
        raise Stop("failed", f"the Docker engine failed {INFRA_ATTEMPTS} times in a row; see the log")

    # ---- LLM --------------------------------------------------------------------------------

    def _llm_record(self, rec: dict) -> None:
        self.journal.record_llm_call(
            level=rec["level"], purpose=rec["purpose"], model=rec["model"], outcome=rec["outcome"],
            prompt_sha256=rec.get("prompt_sha256"), tokens_in=rec.get("tokens_in", 0),
            tokens_out=rec.get("tokens_out", 0), usd=rec.get("usd", 0.0),
            latency_s=rec.get("latency_s"), attempts=rec.get("attempts"), error=rec.get("error"),
            iteration=self.state.iteration if hasattr(self, "state") else None,
        )

    def make_llm(self) -> None:
        self.llm = None
        if self.cfg.llm == "offline":
            return
        used = self.journal.llm_totals()
        budget = Budget(
            max_tokens=None if self.cfg.max_tokens is None else self.cfg.max_tokens - used["tokens"],
            max_usd=None if self.cfg.max_usd is None else self.cfg.max_usd - used["usd"],
        )
        config = LLMConfig.from_env(base_url=self.cfg.llm_base_url, model=self.cfg.llm)
        self.llm = LLMClient(config, budget, on_call=self._llm_record, run_id=self.run_id)

    def llm_json(self, messages: list[dict], level: str, purpose: str) -> dict | None:
        """An LLM call that never crashes the loop; a spent budget ends LLM use cleanly."""
        if self.llm is None:
            return None
        try:
            return self.llm.chat_json(messages, level=level, purpose=purpose)
        except BudgetExceeded as exc:
            self.journal.event("llm_budget_exhausted", {"reason": exc.reason})
            if self.cfg.offline_fallback:
                self.log.warning("llm_budget_exhausted_fallback_offline", reason=exc.reason)
                self.llm = None
                return None
            raise Stop("finished", f"LLM budget exhausted: {exc.reason}") from None
        except LLMError as exc:
            self.log.warning("llm_call_failed", purpose=purpose, error=str(exc)[:200])
            return None

    def propose(self, state: LoopState, sections: list[dict]) -> dict | None:
        if self.llm is None:
            return self.offline.propose(state.incumbent, state.active, state.history)
        msgs = proposal_messages(space=state.space, active=state.active, incumbent=state.incumbent,
                                 best=state.best, history=state.history, sections=sections,
                                 guidance=state.guidance, fence=fence)
        return self.llm_json(msgs, "1", "propose")

    # ---- the levels -------------------------------------------------------------------------

    def level15(self) -> None:
        s = self.state
        cfg = strategy.SearchConfig(active=s.active, frozen=s.frozen, guidance=s.guidance)
        decision = None
        if self.llm is not None:
            decision = self.llm_json(strategy.llm_messages(cfg, s.history, fence), "1.5", "strategy")
        source = "llm" if decision else "offline"
        decision = decision or strategy.offline_decision(cfg, s.history)
        new = strategy.apply_decision(
            cfg, [n for n in decision.get("freeze", []) if isinstance(n, str)],
            [n for n in decision.get("unfreeze", []) if isinstance(n, str)],
            decision.get("guidance", ""), sorted(s.space), self.cfg.min_active)
        s.active, s.frozen, s.guidance = new.active, new.frozen, new.guidance
        self.journal.record_decision(level="1.5", kind=f"search_config:{source}", payload=new.to_dict(),
                                     iteration=s.iteration)

    def level2(self, cycle: int) -> None:
        s = self.state
        records = [e["payload"] for e in self.journal.events("iteration")]
        stand = portfolio.standing(self.mechs.rows(), records, s.iteration)
        if self.llm is None:
            used = [m["name"] for m in self.journal.mechanisms()]
            session = research.offline_session(stand, used, self.cfg.seed, cycle, self.mechs.validate)
        else:
            def chat(messages: list[dict], round_name: str) -> str:
                try:
                    return self.llm.chat(messages, level="2", purpose=f"research:{round_name}").text
                except BudgetExceeded as exc:
                    raise Stop("finished", f"LLM budget exhausted: {exc.reason}") from None
                except LLMError as exc:
                    return f"(the LLM call failed: {exc})"
            session = research.llm_session(chat, fence, s.history, stand, self.mechs.validate)
        rounds = [{**r, "prompt_ref": self.journal.artifacts.put(r["prompt"]),
                   "output_ref": self.journal.artifacts.put(r["output"])} for r in session.rounds]
        payload = {"cycle": cycle, "origin": session.origin, "name": session.name,
                   "action": session.action, "target": session.target, "why": session.why,
                   "accepted": session.accepted, "reason": session.reason,
                   "source_ref": self.journal.artifacts.put(session.source) if session.source else None,
                   "rounds": [{k: r[k] for k in ("round", "prompt_ref", "output_ref")} for r in rounds]}
        activated = False
        if session.accepted:
            activated, why, mech_id = self.mechs.activate(session.name, session.origin, session.source, s.iteration)
            payload.update(activated=activated, mech_id=mech_id, activation=why)
        # A replaced mechanism goes only once its successor is running; a retire needs no successor.
        if session.target and (session.action == "retire" or activated):
            payload["retired"] = self.mechs.retire(session.target)
        self.journal.record_decision(level="2", kind="research_session", payload=payload, iteration=s.iteration)

    # ---- the run ------------------------------------------------------------------------------

    def show(self, **parts) -> None:
        if self.display is not None:
            self.display.update(self.snapshot(**parts))

    def snapshot(self, trial=None) -> dict:
        s = getattr(self, "state", None)
        usage = self.journal.llm_totals()
        done = self.journal.finished_trials()
        best = min((t for t in done if t["status"] == "ok" and (t["kept"] or t["kind"] == "baseline")),
                   key=lambda t: t["val_bpb"], default=None)
        return {
            "run_id": self.run_id, "iteration": s.iteration if s else 0, "iterations": self.cfg.iterations,
            "trial": trial, "best": {"val_bpb": best["val_bpb"], "seq": best["seq"]} if best else None,
            "baseline": s.baseline if s and s.baseline != float("inf") else None,
            "budgets": {"time_left_s": self.time_left(),
                        "tokens_left": None if self.cfg.max_tokens is None else self.cfg.max_tokens - usage["tokens"],
                        "usd_left": None if self.cfg.max_usd is None else self.cfg.max_usd - usage["usd"]},
            "mechanisms": self.mechs.stats() if hasattr(self, "mechs") else [],
            "recent": [{k: t[k] for k in ("seq", "kind", "status", "val_bpb", "kept", "hypothesis")}
                       for t in done[-5:]],
        }

    def restore_state(self) -> None:
        """Rebuild the loop's state from the journal (empty for a new run)."""
        self.defaults = self.task.defaults()
        base = [t for t in self.journal.finished_trials() if t["kind"] == "baseline"]
        vals = [t["val_bpb"] for t in base if t["status"] == "ok"]
        if self.cfg.baseline_val_bpb is not None:  # a shared baseline: this run has no baseline trials
            vals = [self.cfg.baseline_val_bpb]
        self.state = LoopState(space=self.task.space, incumbent=dict(self.defaults),
                               best=min(vals) if vals else float("inf"),
                               baseline=vals[0] if vals else float("inf"),
                               noise=noise_floor(vals) if self.cfg.noise is None else self.cfg.noise,
                               active=sorted(self.task.space))
        for ev in self.journal.events("iteration"):
            rec = ev["payload"]
            self.state.iteration = rec["iteration"]
            if rec["kept"]:
                self.state.incumbent = rec["config"]
                self.state.best = min(self.state.best, rec["val_bpb"])
            self.state.history.append({k: rec.get(k) for k in (
                "iteration", "changes", "val_bpb", "status", "kept", "hypothesis", "source")})
        for d in self.journal.decisions():
            if d["level"] == "1.5":
                p = d["payload"]
                self.state.active, self.state.frozen, self.state.guidance = p["active"], p["frozen"], p["guidance"]

    def baseline(self) -> None:
        if self.cfg.baseline_val_bpb is not None:  # shared baseline: nothing to measure here
            self.restore_state()
            self.show()
            return
        done = [t for t in self.journal.finished_trials() if t["kind"] == "baseline"]
        pending = [t for t in self.journal.trials_to_rerun() if t["kind"] == "baseline"]
        for t in pending:
            self.trial(self.defaults, "baseline", kind="baseline", iteration=0, seq=t["seq"])
        for _ in range(self.cfg.baseline_repeats - len(done) - len(pending)):
            self.trial(self.defaults, "baseline", kind="baseline", iteration=0)
        self.restore_state()
        self.show()
        if self.state.baseline == float("inf"):
            raise Stop("failed", "the baseline trial did not end ok; see its log in the report")

    def resume_iteration(self) -> dict | None:
        """An iteration whose trial was interrupted: rerun that trial, then finish the iteration."""
        for t in self.journal.trials_to_rerun():
            if t["kind"] == "proposal":
                self.state.iteration = t["iteration"] - 1
                chosen = {"changes": t["changes"], "hypothesis": t["hypothesis"] or "", "source": "resumed"}
                return self._iterate(chosen=chosen, seq=t["seq"])
        return None

    def _iterate(self, chosen: dict | None = None, seq: int | None = None) -> dict:
        it = self.state.iteration + 1
        self.mechs.iteration = it
        kinds = iter(["proposal", "repeat"])
        seqs = iter([seq])

        def run_trial(config: dict, hypothesis: str) -> dict:
            return self.trial(config, hypothesis, kind=next(kinds), iteration=it, seq=next(seqs, None))

        step = Step(mechs=self.mechs, propose=self.propose, run_trial=run_trial,
                    offline=self.offline, mode=self.cfg.acceptance)
        record = iterate(self.state, step, chosen=chosen)
        if record["kept"]:
            self.journal.set_kept(record["trial_id"], True)
        self.journal.event("iteration", record)
        self.show()  # after the decision, so the display reports kept or discarded
        self.log.info("iteration", iteration=it, status=record["status"], val_bpb=record["val_bpb"],
                      kept=record["kept"], source=record["source"])
        (self.dir / "results.tsv").write_text(results_tsv(self.journal))
        return record

    def loop(self) -> None:
        self.baseline()
        self.resume_iteration()
        k, m = self.cfg.strategy_every, self.cfg.research_every
        while self.state.iteration < self.cfg.iterations:
            it = self.state.iteration
            if it > 0 and it % k == 0 and not self._done("1.5", it):
                if "1.5" in self.cfg.levels:
                    self.level15()
                if "2" in self.cfg.levels and (it // k) % m == 0 and not self._done("2", it):
                    self.level2(it // (k * m))
            if it == 0 and "2" in self.cfg.levels and not self._done("2", 0):
                self.level2(0)
            self.check_trial_fits()
            self._iterate()
        raise Stop("finished", f"{self.cfg.iterations} iterations done")

    def _done(self, level: str, iteration: int) -> bool:
        return any(d["level"] == level and d["iteration"] == iteration for d in self.journal.decisions())

    def execute(self) -> int:
        """Run or resume to the end; returns the process exit code."""
        message = self.open()
        if message:
            print(message)
            self.journal.close()
            return 0
        logs.configure(path=self.dir / "log.jsonl")
        self.log = logs.get_logger(run_id=self.run_id)
        self.journal.set_state("running", "started" if not self.journal.trials() else "resumed")
        interrupted = self.journal.mark_running_trials_interrupted()
        try:
            self.client = engine.connect()
            engine.sweep_orphans(self.client)
            self.task = self.bound_task or self.cfg.load_task()
            self.trial_inputs = self.task.trial_inputs()
            self.offline = OfflineProposer(self.task.space, self.cfg.seed + len(self.journal.trials()))
            self.make_llm()
            self.restore_state()
            self.mechs = RunMechanisms(self.client, self.policy, self.journal, self.run_id, self.cfg.seed)
            self.mechs.restore()
            self.log.info("run_start", interrupted=interrupted, llm=self.cfg.llm, levels=self.cfg.levels)
            self.loop()
        except Stop as stop:
            self.journal.set_state(stop.state, stop.reason)
            self.log.info("run_end", state=stop.state, reason=stop.reason)
            print(f"run {self.run_id}: {stop.state} ({stop.reason})")
            return 0 if stop.state in ("finished", "stopped") else 1
        except BaseException as exc:
            state = "stopped" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
            self.journal.set_state(state, f"{exc.__class__.__name__}: {exc}"[:500])
            raise
        finally:
            if hasattr(self, "mechs"):
                self.mechs.close()
            (self.dir / "results.tsv").write_text(results_tsv(self.journal))
            self.journal.close()
        return 0

    def install_signals(self) -> None:
        """First SIGINT/SIGTERM: stop gracefully (the policy decides the running trial's fate).
        Second: stop at once; the journal stays consistent and the trial reruns on resume."""
        def handler(signum, frame):
            if self.stop_requested.is_set():
                raise SystemExit(128 + signum)
            self.stop_requested.set()
            if self.policy.trial["near_deadline"] == "kill":
                self.cancel_trial.set()
            print(f"\nbilevel: stopping after signal {signum}; send it again to stop at once", flush=True)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

