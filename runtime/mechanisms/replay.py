"""Replay one mechanism in isolation: a fresh sandbox, the same seed, the journaled calls.

Why: a mechanism that failed overnight must be reproducible the next morning without the
run around it. The replay file (`RUN/mechanisms/<ID>.replay.jsonl`) holds a header line
{mech_id, name, source, seed, limits} and then one line per call, exactly the journal's
`mechanism_calls` fields {mech_id, seq, hook, input, output, outcome, error, latency_ms}.
Fuel and the seeded `random` facade make a replay deterministic; only latencies differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bilevel.runtime.mechanisms.host import SandboxedMechanism
from bilevel.runtime.policy import Policy

# Limits a replay takes from the file (they change what the mechanism does); resource
# limits (memory, pids, cpus) stay those of the current policy.
REPLAYED_LIMITS = {"fuel": int, "print_kb": int, "max_source_kb": int, "max_message_kb": int,
                   "call_timeout_s": float, "load_timeout_s": float}
MAX_TIMEOUT_S = 60.0


class ReplayError(ValueError):
    """A replay file that cannot be used; the message says why."""


@dataclass
class ReplayReport:
    same: bool
    replayed: int
    total: int
    divergence: dict | None = None
    load_error: str | None = None


def read_replay(path: str | Path) -> tuple[dict, list[dict]]:
    """(header, records) of a replay file."""
    p = Path(path)
    if not p.is_file():
        raise ReplayError(f"no replay file at {p}")
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ReplayError(f"{p} is empty")
    try:
        header, records = json.loads(lines[0]), [json.loads(ln) for ln in lines[1:]]
    except ValueError as exc:
        raise ReplayError(f"{p}: not JSON lines: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("source"), str):
        raise ReplayError(f"{p}: the first line is not a replay header")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("hook"), str) \
                or not isinstance(r.get("input"), list):
            raise ReplayError(f"{p}: line {i + 2} is not a call record")
    return header, records


def replay_policy(policy: Policy, limits: dict) -> Policy:
    """The current policy with the behaviour-relevant limits of the recorded run."""
    mech = dict(policy.mechanism)
    for key, kind in REPLAYED_LIMITS.items():
        value = limits.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            mech[key] = kind(min(value, MAX_TIMEOUT_S) if key.endswith("_s") else value)
    facades = limits.get("facades")
    if isinstance(facades, list) and set(facades) <= set(policy.mechanism["facades"]) | {
        "math", "random", "statistics", "itertools", "collections", "heapq", "bisect"
    }:
        mech["facades"] = [f for f in facades if isinstance(f, str)]
    return Policy({**policy.data, "mechanism": mech}, f"{policy.source} (replay)")


def _same(a: dict, b: dict) -> bool:
    # Invariant 3: both sides are JSON the host decoded itself (the file and its own records),
    # so `==` compares plain dicts, lists and scalars, never a sandbox object.
    if a.get("outcome") != b.get("outcome"):
        return False
    return a.get("output") == b.get("output")


def replay_calls(mech: SandboxedMechanism, records: list[dict]) -> ReplayReport:
    """Re-feed `records` in order to a started mechanism; stop at the first diverging call.

    The one replay-and-compare: `bilevel replay RUN mechanism ID` and a resume's restore of a
    run's mechanisms both use it. The mechanism stays started (a restore keeps it running).
    """
    for i, rec in enumerate(records):
        before = len(mech.records)
        mech.call(rec["hook"], *rec["input"])
        got = mech.records[-1] if len(mech.records) > before else None
        now: dict[str, Any] = {"outcome": "quarantined", "output": None, "error": None}
        if got is not None:
            now = {"outcome": got.outcome, "output": got.output, "error": got.error}
        if not _same(rec, now):
            return ReplayReport(False, i + 1, len(records), {
                "seq": rec.get("seq", i), "hook": rec["hook"],
                "expected": {k: rec.get(k) for k in ("outcome", "output", "error")},
                "got": now})
    return ReplayReport(True, len(records), len(records))


def replay(header: dict, records: list[dict], policy: Policy,
           transport_factory=None) -> ReplayReport:
    """Re-run `records` in order in a fresh sandbox; stop at the first diverging call."""
    mech = SandboxedMechanism(header.get("mech_id", "replay"), header["source"],
                              policy=replay_policy(policy, header.get("limits") or {}),
                              seed=int(header.get("seed", 0)), name=header.get("name"),
                              transport_factory=transport_factory)
    try:
        loaded = mech.start()
        if not loaded.ok:
            return ReplayReport(not records, 0, len(records), load_error=loaded.error,
                                divergence=None if not records else {
                                    "seq": None, "hook": "load", "got": {"error": loaded.error}})
        return replay_calls(mech, records)
    finally:
        mech.close()
