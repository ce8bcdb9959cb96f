"""Synthetic ablation results for the statistics and report tests: no daemon, no journal."""

from __future__ import annotations

from bilevel.runtime.ablation.protocol import GROUPS
from bilevel.runtime.ablation.stats import RunResult


def result(group: str, seed: int, delta: float, *, mechanisms=None, done: int = 3, planned: int | None = None,
           **kw) -> RunResult:
    """A run of `done` iterations (of `planned`) whose best reached baseline + delta at the last one."""
    base = 2.0
    curve = [base] * done + [base + delta]
    return RunResult(group=group, seed=seed, run=f"runs/{group}-s{seed}", levels=list(GROUPS[group]),
                     baseline=base, curve=curve, iterations=planned or done, state="finished",
                     mechanisms=mechanisms or [], **kw)


def mech(calls: dict, name: str = "tabu", mech_id: int = 1) -> dict:
    return {"id": mech_id, "name": name, "origin": "library", "state": "active", "quarantined": False,
            "active": True, "activated_at": 1,
            "calls": calls}
