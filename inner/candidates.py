"""Enforce the mechanisms' constraints on every candidate, whoever proposed it.

Constraints are not just prompted: a candidate that touches a forbidden or frozen constant, or
sets a value outside a mechanism's range, is refused here with a reason, before any edit.
"""

from __future__ import annotations

from typing import Any

from .edits import EditError, Param, check_rules, validate


def merge_constraints(outputs: list[tuple[str, dict]]) -> dict:
    """Union of forbidden names and intersection of ranges, remembering who asked for what."""
    forbid: dict[str, str] = {}
    ranges: dict[str, tuple[float, float, str]] = {}
    for mech, c in outputs:
        for name in c.get("forbid", []):
            forbid.setdefault(name, mech)
        for name, (lo, hi) in c.get("ranges", {}).items():
            old = ranges.get(name)
            if old is None:
                ranges[name] = (lo, hi, mech)
            else:
                ranges[name] = (max(old[0], lo), min(old[1], hi), f"{old[2]}+{mech}")
    return {"forbid": forbid, "ranges": ranges}


def check_candidate(
    cand: dict, space: dict[str, Param], incumbent: dict[str, Any], frozen: list[str], merged: dict,
) -> tuple[dict | None, str]:
    """(validated changes, "ok") or (None, why it was refused)."""
    changes = cand.get("changes")
    if not isinstance(changes, dict) or not changes:
        return None, "no changes"
    try:
        values = validate(changes, space)
    except EditError as exc:
        return None, f"invalid: {exc}"
    for name, value in values.items():
        if name in frozen:
            return None, f"{name} is frozen by the strategy level"
        if name in merged["forbid"]:
            return None, f"{name} is forbidden by mechanism {merged['forbid'][name]}"
        if name in merged["ranges"] and not isinstance(value, bool | str):
            lo, hi, who = merged["ranges"][name]
            if not lo <= value <= hi:
                return None, f"{name}={value!r} outside [{lo}, {hi}] set by mechanism {who}"
    if all(incumbent.get(n) == v for n, v in values.items()):
        return None, "identical to the incumbent"
    try:
        check_rules(space, {**incumbent, **values})  # a rule the script would assert on: refused here
    except EditError as exc:
        return None, f"invalid: {exc}"
    return values, "ok"
