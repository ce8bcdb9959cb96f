"""Which mechanisms earn their place: the evidence Level 2 weighs before it adds, replaces or
retires one.

The published implementation only ever added mechanisms, and never checked that they were
called. Here every iteration record says what each mechanism did (`effects`, `source`), so a
mechanism's standing is counted from the journal: how long it has been active, how often it was
called, how often it shaped the chosen candidate, and how many kept trials it shaped ("wins").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

PATIENCE = 4   # iterations a mechanism is given to shape a kept trial before it may be replaced
ACTIONS = ("add", "replace", "retire")
NOT_A_MECHANISM = (None, "proposer", "fallback", "resumed")


def effects(records: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Per mechanism name, what the iteration records say it did (counted over iterations)."""
    eff: dict[str, Counter] = defaultdict(Counter)
    for rec in records:
        for name, e in (rec.get("effects") or {}).items():
            c = eff[name]
            if e.get("sections"):
                c["sections"] += len(e["sections"])
            if e.get("constraints"):
                c["constraints"] += 1
            if e.get("suggested"):
                c["suggested"] += int(e["suggested"])
            if e.get("reviewed"):
                c["reviews"] += 1
                c["removed"] += max(0, int(e["reviewed"].get("in", 0)) - int(e["reviewed"].get("out", 0)))
            if e.get("accept") in ("keep", "discard"):
                c[f"accept_{e['accept']}"] += 1
        src = rec.get("source")
        if src not in NOT_A_MECHANISM:
            eff[src]["chosen"] += 1
            eff[src]["chosen_kept"] += bool(rec.get("kept"))
        for r in rec.get("rejected") or []:
            if r.get("source") not in NOT_A_MECHANISM:
                eff[r["source"]]["refused"] += 1
    return {k: dict(v) for k, v in eff.items()}


def shaped(rec: dict, name: str) -> bool:
    """Did the mechanism decide this iteration's candidate or verdict? (Prompt sections and
    constraints only inform; a suggestion chosen, a review that changed the candidates, or an
    accept vote decides.)"""
    e = (rec.get("effects") or {}).get(name, {})
    return rec.get("source") == name or bool(e.get("reviewed")) or e.get("accept") in ("keep", "discard")


def standing(mechanisms: list[dict], records: list[dict], iteration: int) -> list[dict]:
    """Each active mechanism's record since it was activated, as plain JSON for a prompt or rule.

    `mechanisms` are journal rows plus a `calls` dict (hook -> n); `records` the iteration
    records so far; `iteration` the last completed iteration."""
    out = []
    for m in mechanisms:
        if not m["active"]:
            continue
        since = m["activated_at_iteration"] or 0
        recs = [r for r in records if r["iteration"] >= since]
        out.append({
            "name": m["name"], "origin": m["origin"], "activated_at_iteration": since,
            "iterations_active": max(0, iteration - since + 1),
            "calls": m.get("calls", {}),
            "shaped": sum(shaped(r, m["name"]) for r in recs),
            "wins": sum(shaped(r, m["name"]) and bool(r.get("kept")) for r in recs),
            "effects": effects(recs).get(m["name"], {}),
        })
    return out


def idlest(stand: list[dict], patience: int = PATIENCE) -> str | None:
    """The mechanism that has had `patience` iterations and shaped no kept trial, the least
    involved first (fewest iterations shaped, then the oldest); None when all earn their place."""
    idle = [s for s in stand if s["iterations_active"] >= patience and s["wins"] == 0]
    idle.sort(key=lambda s: (s["shaped"], s["activated_at_iteration"]))
    return idle[0]["name"] if idle else None
