"""Synthetic iteration records and mechanism rows for Level 2's portfolio and research tests."""

from __future__ import annotations


def rec(iteration: int, source: str = "proposer", kept: bool = False, effects: dict | None = None) -> dict:
    return {"iteration": iteration, "source": source, "kept": kept, "effects": effects or {}, "rejected": []}


def mech(name: str, since: int, active: bool = True) -> dict:
    return {"name": name, "origin": "library", "activated_at_iteration": since, "active": active,
            "calls": {"suggest": 3}}


RECORDS = [
    rec(1, "proposer", kept=True, effects={"tabu": {"constraints": {"forbid": ["X"]}}}),  # informs only
    rec(2, "bandit", kept=True),                                                           # a win
    rec(3, "proposer", kept=True, effects={"critic": {"reviewed": {"in": 2, "out": 1}}}),  # a win by review
    rec(4, "bandit", kept=False),                                                          # shaped, no win
    rec(5, "proposer", effects={"voter": {"accept": "discard"}}),
]
