"""A run's budgets and how it stops: the deadline, the LLM budgets, and signals.

Checked before each step, never after: a trial that cannot finish its training before the
deadline is not started, and an LLM call that could overspend is not made (the client checks
its own budget before each call). A stop is a `Stop` raised inside the loop, carrying the state
the run ends in and why.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from bilevel.runtime.llm.client import Budget
from bilevel.runtime.policy import Policy
from bilevel.runtime.run.config import RunConfig
from bilevel.runtime.vocabulary import RunState


class Stop(Exception):
    """Raised inside the loop to end the run with a state and a reason."""

    def __init__(self, state: RunState, reason: str) -> None:
        super().__init__(reason)
        self.state, self.reason = state, reason


class Controls:
    """What signals and timers set, and the trial runner and the schedule read."""

    def __init__(self) -> None:
        self.stop_requested = threading.Event()   # first signal: stop after/at the current trial
        self.cancel_trial = threading.Event()     # set when the policy says to kill the trial
        self.deadline_hit = False

    def hit_deadline(self) -> None:
        self.deadline_hit = True
        self.cancel_trial.set()


class Budgets:
    """The run's limits, read from its journaled config (which holds the absolute deadline)."""

    def __init__(self, cfg: RunConfig, config: dict, policy: Policy, controls: Controls) -> None:
        self.cfg, self.config, self.policy, self.controls = cfg, config, policy, controls

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
            raise Stop(RunState.FINISHED, f"deadline: {max(left, 0):.0f} s left, a trial needs up to {need:.0f} s")
        if self.controls.stop_requested.is_set():
            raise Stop(RunState.STOPPED, "stop requested (signal)")

    def check_gpu_hours(self, used: float) -> None:
        """`--max-gpu-hours`: counted from each trial's GPUs x wall time (`RunView.gpu_hours`)."""
        cap = self.cfg.max_gpu_hours
        if cap is not None and used >= cap:
            raise Stop(RunState.FINISHED, f"GPU-hours budget spent: {used:.3f} of {cap:g}")

    def llm_budget(self, used: dict) -> Budget:
        """What the LLM client may still spend, given what the journal says was spent."""
        return Budget(
            max_tokens=None if self.cfg.max_tokens is None else self.cfg.max_tokens - used["tokens"],
            max_usd=None if self.cfg.max_usd is None else self.cfg.max_usd - used["usd"],
        )

    def left(self, used: dict) -> dict:
        """Time, tokens and USD left, for the live display (None: unlimited)."""
        return {"time_left_s": self.time_left(),
                "tokens_left": None if self.cfg.max_tokens is None else self.cfg.max_tokens - used["tokens"],
                "usd_left": None if self.cfg.max_usd is None else self.cfg.max_usd - used["usd"]}
