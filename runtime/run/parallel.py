"""Many trials at once (`--parallel N`): N slots, proposals drafted while trials run. Also one
slot with an LLM (`trial.draft_ahead`): the trial then never waits for the next proposal.

Threads. The journal has one writer, the main thread (one sqlite3 connection). Each slot's
container runs in a worker thread (`TrialRunner.execute` touches no journal); each proposal's
LLM call runs in a worker of its own (several at once with several slots), whose journal
records `RunLLM` queues for the main thread. Every
journal write, every mechanism call (their sandboxes), every decision, and Level 1.5 and 2
stay on the main thread, which never waits on one thing: it wakes when a trial or a draft ends.

The rules (README "Parallel slots"):
- a proposal gets its iteration number when it is drafted; it sees every finished trial and,
  in the view's `pending` list and in the prompt, every trial in flight (marked running);
  a candidate equal to a configuration in flight or already run is refused;
- acceptance is decided as each trial finishes, against the best at that moment (with one
  slot: today's rule); the iteration records are written in that order, results.tsv stays in
  seq order;
- the next proposal is drafted while the slots' trials run, so a slot that frees finds one
  ready, and a ready one starts first; Level 1.5 and Level 2 run when their count of decided
  iterations comes, between drafts, once every slot is busy, while the trials go on;
- on resume every interrupted proposal trial is run again first, with its recorded changes
  and iteration.
"""

from __future__ import annotations

import json
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bilevel.inner.loop import Step, conclude, gather, pick
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.run.budgets import Stop
from bilevel.runtime.run.slots import Slot
from bilevel.runtime.run.trials import INFRA_ATTEMPTS, Started
from bilevel.runtime.vocabulary import LLMAnswer, RunState, TrialKind

TICK_S = 0.5   # the longest the main thread sleeps with nothing finished (signals, budgets)
AHEAD = 2              # proposals kept ready while every slot is busy (at most one per slot)
DRAFT_WAIT_S = 120.0   # at the end, how long a proposal's LLM call in flight may take to finish


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Draft:
    """A proposal for iteration `iteration`, from its first mechanism call to its trial's start."""

    iteration: int
    effects: dict = field(default_factory=dict)
    merged: dict = field(default_factory=dict)
    mechanisms: list[int] = field(default_factory=list)   # the active mechanism set it saw
    pending: list[int] = field(default_factory=list)      # the iterations in flight when drafted
    drafted_at: str = field(default_factory=_now)
    ready_at: str | None = None
    future: Future | None = None       # the LLM call, while it runs
    proposal: dict | None = None       # the proposer's answer (offline: made at once)
    chosen: dict | None = None
    config: dict | None = None
    rejected: list = field(default_factory=list)
    seq: int | None = None             # a resumed trial's seq
    llm_answer: LLMAnswer | None = None   # what became of its LLM call (None: none was asked)

    def pending_entry(self) -> dict:
        return {"iteration": self.iteration, "changes": dict(self.chosen["changes"]),
                "config": dict(self.config), "hypothesis": self.chosen["hypothesis"], "status": "running"}


@dataclass
class Flight:
    draft: Draft
    started: Started
    attempts: int = 1


class ParallelLoop:
    """Runs a schedule's iterations on `slots`; ends by raising `Stop`, like `Schedule.loop`."""

    def __init__(self, schedule: Any, slots: list[Slot]) -> None:  # a `schedule.Schedule` (it imports this)
        self.s, self.slots = schedule, slots
        self.free: list[Slot] = list(slots)
        self.flights: dict[Future, Flight] = {}
        self.ready: list[Draft] = []
        self.drafts: list[Draft] = []      # proposals whose LLM call runs now
        self.stop: Stop | None = None
        self.tried: set[str] = set()
        self.next_it = 1
        self.concluded = 0
        self.levels_checked = 0
        self.levels_started = False
        self.pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="bilevel-slot")
        self.llm_pool = ThreadPoolExecutor(max_workers=max(AHEAD, len(slots)), thread_name_prefix="bilevel-llm")

    # ---- the journal's facts this loop starts from ---------------------------------------------

    def _key(self, config: dict) -> str:
        defaults = self.s.trials.defaults
        return json.dumps({k: v for k, v in config.items() if defaults.get(k) != v}, sort_keys=True, default=str)

    def _restore(self) -> None:
        view = RunView.read(self.s.journal)
        defaults = self.s.trials.defaults
        self.tried = {self._key({**defaults, **t.changes}) for t in view.finished}
        proposals = [t for t in view.trials if t.kind == TrialKind.PROPOSAL]
        self.next_it = max((t.iteration for t in proposals), default=0) + 1
        self.concluded = len(view.iterations)
        # The last count again: a run killed between a decision and its Level 1.5/2 session runs
        # that session on resume (the journal's decisions say which already ran).
        self.levels_checked = max(self.concluded - 1, 0)
        for t in view.to_rerun:   # every interrupted proposal first, with its recorded changes
            if t.kind != TrialKind.PROPOSAL:
                continue
            d = Draft(iteration=t.iteration, seq=t.seq, chosen={"changes": t.changes, "hypothesis": t.hypothesis
                                                                or "", "source": "resumed"})
            d.config, d.ready_at = {**defaults, **t.changes}, _now()
            self.ready.append(d)

    # ---- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self._restore()
        self._guard(self._check_llm)   # its streak counts from here, as the sequential loop's does
        timer = self.s.trials._deadline_timer()  # near the run's deadline the policy decides, every slot
        try:
            while True:
                self.s.llm.drain()
                self._collect()
                # A ready draft starts before anything else runs: no slot waits for a session.
                for step in (self._start_ready, self._outer_levels, self._maybe_draft, self._start_ready):
                    if self.stop is None:
                        self._guard(step)
                if not self.flights and (self.stop is not None or self._all_done()):
                    break
                if self.stop is None and self.free and (self.ready or self._can_draft()):
                    continue   # a free slot and work for it: no waiting
                waiting = list(self.flights) + [d.future for d in self.drafts]
                wait(waiting, timeout=TICK_S, return_when=FIRST_COMPLETED)
        except BaseException:
            # Whatever went wrong here, no container outlives the loop: kill them, wait, mark.
            self.s.trials.controls.cancel_trial.set()
            wait(list(self.flights), timeout=120)
            self.s.journal.mark_running_trials_interrupted()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if self.drafts:
                # An LLM call in flight is spent: let it end, so the journal counts what it used.
                wait([d.future for d in self.drafts], timeout=DRAFT_WAIT_S)
            self.s.llm.drain()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.llm_pool.shutdown(wait=False, cancel_futures=True)
        raise self.stop or Stop(RunState.FINISHED, f"{self.s.cfg.iterations} iterations done")

    def _guard(self, step) -> None:
        try:
            step()
        except Stop as stop:
            self.stop = stop

    def _all_done(self) -> bool:
        return self.next_it > self.s.cfg.iterations and not self.drafts and not self.ready

    # ---- slots: start, collect, conclude ---------------------------------------------------------

    def _start_ready(self) -> None:
        while self.ready and self.free and self.stop is None:
            self.s.trials.check_fits()   # per slot: no trial starts that cannot finish
            d, slot = self.ready.pop(0), self.free.pop(0)
            self._launch(Flight(d, self._begin(d, slot)))

    def _begin(self, d: Draft, slot: Slot) -> Started:
        started = self.s.trials.begin(d.config, d.chosen["hypothesis"], kind=TrialKind.PROPOSAL,
                                      iteration=d.iteration, seq=d.seq, slot=slot)
        d.seq = started.seq
        return started

    def _launch(self, flight: Flight) -> None:
        self.flights[self.pool.submit(self.s.trials.execute, flight.started)] = flight

    def _collect(self) -> None:
        for fut in [f for f in self.flights if f.done()]:
            flight = self.flights.pop(fut)
            slot = flight.started.slot
            self.s.live.pop(slot.index, None)
            try:
                result = self.s.trials.settle(flight.started, fut.result())
            except Stop as stop:
                self.stop = self.stop or stop
                self.free.append(slot)
                continue
            if result is None:  # the engine failed under it: the same trial again, same slot
                if self.stop is not None:   # stopping: it reruns on resume
                    self.free.append(slot)
                    continue
                if flight.attempts >= INFRA_ATTEMPTS:
                    self.stop = Stop(RunState.FAILED, f"the Docker engine failed {INFRA_ATTEMPTS} times in a row")
                    self.free.append(slot)
                    continue
                self._launch(Flight(flight.draft, self._begin(flight.draft, slot), flight.attempts + 1))
                continue
            self._conclude(flight, result)
            self.free.append(slot)
            self.free.sort(key=lambda x: x.index)
            self._guard(self._check_llm)

    def _check_llm(self) -> None:
        """K unusable LLM answers in a row end the run (or turn it offline), as in the sequential
        loop; the trials in flight finish and are decided first."""
        s = self.s
        s.llm.check_unusable(RunView.read(s.journal), s.budgets.policy["llm"]["max_unusable"])

    def _conclude(self, flight: Flight, result: dict) -> None:
        s, d = self.s, flight.draft
        state = s.state
        s.mechs.iteration = d.iteration
        state.pending = self._pending(exclude=d)
        view = {**state.view(), "iteration": d.iteration}

        def repeat(config: dict, hypothesis: str) -> dict:  # noise-aware: in the same slot, here
            return s.trials.run(config, hypothesis, kind=TrialKind.REPEAT, iteration=d.iteration,
                                slot=flight.started.slot)

        step = Step(mechs=s.mechs, propose=s.propose, run_trial=repeat, offline=s.offline, mode=s.cfg.acceptance)
        record = conclude(state, step, iteration=d.iteration, chosen=d.chosen, config=d.config, result=result,
                          view=view, effects=d.effects, rejected=d.rejected)
        s.llm_answer = d.llm_answer
        s.judge_llm_answer(record)
        record["parallel"] = {"slot": flight.started.slot.index, "drafted_at": d.drafted_at,
                              "ready_at": d.ready_at, "mechanisms": d.mechanisms, "pending": d.pending}
        s.journal.record_iteration(record)
        self.tried.add(self._key(d.config))
        self.concluded += 1
        s.progress()
        s.log.info("iteration", iteration=d.iteration, status=record["status"], val_bpb=record["val_bpb"],
                   kept=record["kept"], source=record["source"], slot=flight.started.slot.index)

    def _pending(self, exclude: Draft | None = None) -> list[dict]:
        """Every configuration in flight: running trials and drafts ready to start."""
        drafts = [f.draft for f in self.flights.values()] + self.ready
        return [d.pending_entry() for d in drafts if d is not exclude and d.config is not None]

    def _refuse(self, config: dict) -> str | None:
        key = self._key(config)
        if any(self._key(p["config"]) == key for p in self._pending()):
            return "the same configuration is running in another slot"
        if key in self.tried:
            return "this configuration was already run"
        return None

    # ---- drafts: mechanisms here, the LLM in workers ----------------------------------------------

    def _can_draft(self) -> bool:
        """As many proposals ready or being drafted as free slots, and ahead of the busy ones: one
        with one slot, two with more (slots that free close together each find one ready). With
        several slots the LLM calls of different drafts overlap, so N slots do not wait N calls."""
        ahead = min(AHEAD, len(self.slots))
        return (self.next_it <= self.s.cfg.iterations
                and len(self.ready) + len(self.drafts) < max(ahead, len(self.free)))

    def _maybe_draft(self) -> None:
        for d in [d for d in self.drafts if d.future.done()]:
            self._finish_draft(d)
        while self.stop is None and self._can_draft():
            self._draft()

    def _draft(self) -> None:
        """Mechanisms here, on the main thread; the LLM's call in a worker (offline: here, at once)."""
        s = self.s
        d = Draft(iteration=self.next_it)
        self.next_it += 1
        state = s.state
        state.iteration = s.mechs.iteration = d.iteration
        state.pending = self._pending()
        d.pending = [p["iteration"] for p in state.pending]
        d.mechanisms = sorted(m.mech_id for m in s.mechs.set.mechs if m.active)
        sections, d.merged = gather(state, self._step(), state.view(), d.effects)
        if not s.llm.online:
            d.proposal = s.propose(state, sections)
            self._finish_draft(d)
            return
        snapshot = replace(state, history=list(state.history), incumbent=dict(state.incumbent),
                           active=list(state.active), frozen=list(state.frozen),
                           pending=[dict(p) for p in state.pending])
        d.future = self.llm_pool.submit(s.ask, snapshot, sections)
        self.drafts.append(d)
        self._waiting(f"the LLM: a proposal for iteration {d.iteration}")

    def _finish_draft(self, d: Draft) -> None:
        if d.future is not None:
            self.drafts.remove(d)
            self.s.llm.drain()
            if not self.drafts:
                self.s.waiting = None
            d.proposal, d.llm_answer = d.future.result()   # a Stop (LLM budget spent) is raised here
        s, state = self.s, self.s.state
        state.iteration = s.mechs.iteration = d.iteration
        state.pending = self._pending()
        d.chosen, d.rejected = pick(state, self._step(), state.view(), d.effects, d.merged, d.proposal)
        d.config, d.ready_at = {**state.incumbent, **d.chosen["changes"]}, _now()
        self.ready.append(d)

    def _step(self) -> Step:
        s = self.s
        return Step(mechs=s.mechs, propose=s.propose, run_trial=None, offline=s.offline,
                    mode=s.cfg.acceptance, refuse=self._refuse)

    # ---- Level 1.5 and Level 2: when their count of decided iterations comes ---------------------

    def _outer_levels(self) -> None:
        """Sessions wait while a draft is being made, and while a slot is free that a draft could
        fill (so Level 2's first session runs beside the first trials, not before them)."""
        if self.drafts or (self.free and self.next_it <= self.s.cfg.iterations):
            return
        s = self.s
        counts = [] if self.levels_started else [0]
        self.levels_started = True
        counts += list(range(self.levels_checked + 1, self.concluded + 1))
        self.levels_checked = self.concluded
        for count in counts:
            if count % s.cfg.strategy_every == 0 and len(s.cfg.levels) > 1:
                self._waiting(f"a Level 1.5/2 session after {count} decided iterations (trials go on)")
            live = s.state
            s.state = replace(live, iteration=count)  # the levels key their decisions by this count
            try:
                s.outer_levels(RunView.read(s.journal))
            finally:
                live.active, live.frozen, live.guidance = s.state.active, s.state.frozen, s.state.guidance
                s.state = live
                s.waiting = None

    def _waiting(self, what: str) -> None:
        """Tell the observers what the orchestrator waits for (the live display's last line)."""
        self.s.waiting = what
        self.s.progress()
