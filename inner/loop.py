"""Level 1: one iteration of the inner autoresearch loop.

context + constraints -> proposal -> suggest + review -> enforce constraints -> typed edit
-> sandboxed trial -> acceptance -> observe. Each step that involves a mechanism goes through
`mechs` (the sandboxed mechanism set); what each mechanism changed is recorded in `effects`,
so the journal proves which mechanisms ran and what they did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .acceptance import decide
from .candidates import check_candidate, merge_constraints
from .edits import Param
from .proposer import OfflineProposer

MAX_SECTION = 2000        # characters of one mechanism context section in a prompt
MAX_SECTIONS = 6
# The keys of one history entry: the loop appends these, a resume rebuilds them, views show them.
HISTORY_KEYS = ("iteration", "changes", "val_bpb", "status", "kept", "hypothesis", "source")
# What `observe` receives: the mechanism contract's record.
OBSERVE_KEYS = ("iteration", "changes", "config", "val_bpb", "best_before", "status", "hypothesis", "kept")


@dataclass
class LoopState:
    """What the loop knows: rebuilt from the journal on resume."""

    space: dict[str, Param]
    incumbent: dict[str, Any]
    best: float
    baseline: float
    noise: float = 0.0
    history: list[dict] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    guidance: str = ""
    iteration: int = 0
    # Trials in flight (parallel slots): {iteration, changes, config, hypothesis, status: "running"}.
    pending: list[dict] = field(default_factory=list)

    def view(self) -> dict:
        """The read-only snapshot mechanisms see: plain JSON."""
        return {
            "iteration": self.iteration,
            "history": self.history,
            "incumbent": dict(self.incumbent),
            "best": self.best,
            "baseline": self.baseline,
            "space": {n: {"type": p.type, "min": p.min, "max": p.max, "values": list(p.values)}
                      for n, p in self.space.items()},
            "active": list(self.active),
            "frozen": list(self.frozen),
            "pending": [dict(p) for p in self.pending],
        }


@dataclass
class Step:
    """The pieces a loop needs from outside, passed in so that the loop stays pure logic."""

    mechs: Any                                              # .call_all(hook, *args) -> [(name, out)]
    propose: Callable[[LoopState, list[dict]], dict | None]  # LLM or offline proposal
    run_trial: Callable[[dict, str], dict]                  # (config, hypothesis) -> result dict
    offline: OfflineProposer
    mode: str = "strict"
    # A candidate's full config -> why it is refused (in flight, or already run), else None.
    refuse: Callable[[dict], str | None] | None = None


def _sections(outputs: list[tuple[str, Any]]) -> list[dict]:
    out = []
    for name, secs in outputs:
        for s in secs[:MAX_SECTIONS]:
            out.append({"title": f"{name}: {s['title'][:80]}", "text": s["text"][:MAX_SECTION]})
    return out[:MAX_SECTIONS * 2]


def _contract(cand: dict) -> dict:
    """A candidate as the mechanism contract shapes it: changes and hypothesis, nothing else."""
    return {"changes": cand.get("changes"), "hypothesis": str(cand.get("hypothesis", ""))[:500]}


def _with_source(cand: dict, before: list[dict], reviewer: str) -> dict:
    """Keep a reviewed candidate's origin if it came through unchanged, else credit the reviewer."""
    for b in before:
        if b.get("changes") == cand.get("changes"):
            return {**_contract(cand), "source": b.get("source", "proposer")}
    return {**_contract(cand), "source": reviewer}


def gather(state: LoopState, step: Step, view: dict, effects: dict) -> tuple[list[dict], dict]:
    """The mechanisms' prompt sections and merged constraints: what a proposal is drafted with."""
    sections = _sections(step.mechs.call_all("context", view))
    for s in sections:
        effects.setdefault(s["title"].split(":")[0], {}).setdefault("sections", []).append(s["title"])
    cons = step.mechs.call_all("constraints", view)
    for name, c in cons:
        effects.setdefault(name, {})["constraints"] = c
    return sections, merge_constraints(cons)


def _check(cand: dict, state: LoopState, step: Step, merged: dict,
           frozen: list[str] | None = None) -> tuple[dict | None, str]:
    """A candidate's checked changes, or None and why: the space, the constraints, then `refuse`."""
    frozen = state.frozen if frozen is None else frozen
    values, why = check_candidate(cand, state.space, state.incumbent, frozen, merged)
    if values is not None and step.refuse is not None:
        refused = step.refuse({**state.incumbent, **values})
        if refused:
            return None, refused
    return values, why


def choose(state: LoopState, step: Step, view: dict, effects: dict) -> tuple[dict, dict, list]:
    """Gather candidates, let mechanisms review them, enforce constraints, pick one."""
    sections, merged = gather(state, step, view, effects)
    proposal = step.propose(state, sections)
    chosen, rejected = pick(state, step, view, effects, merged, proposal)
    return chosen, merged, rejected


def pick(state: LoopState, step: Step, view: dict, effects: dict, merged: dict,
         proposal: dict | None) -> tuple[dict, list]:
    """The proposal and the mechanisms' suggestions, reviewed and checked: the one to run."""
    suggestions = []
    for name, cands in step.mechs.call_all("suggest", view):
        for c in cands:
            suggestions.append({**c, "source": name})
        effects.setdefault(name, {})["suggested"] = len(cands)
    own = [dict(proposal, source="proposer")] if isinstance(proposal, dict) else []
    # Odd iterations try the mechanisms' suggestions first, even ones the proposer's.
    rejected = []
    candidates = []
    for cand in suggestions + own if state.iteration % 2 else own + suggestions:
        # Only valid candidates, in the contract's shape, go on to the reviewers.
        values, why = _check(cand, state, step, merged)
        if values is None:
            rejected.append({"source": cand.get("source"), "changes": cand.get("changes"), "why": why})
        else:
            candidates.append({**_contract({**cand, "changes": values}), "source": cand["source"]})
    for name, reviewed in step.mechs.review_chain([_contract(c) for c in candidates], view):
        kept = [c for c in reviewed if isinstance(c, dict)]
        if [_contract(c) for c in kept] != [_contract(c) for c in candidates]:
            effects.setdefault(name, {})["reviewed"] = {"in": len(candidates), "out": len(kept)}
        if _admissible(state, step, candidates, merged) and not _admissible(state, step, kept, merged):
            # A review may narrow the list, never empty it: the reviewer goes, its output is dropped.
            _quarantine(step, name, "review", f"its review left none of {len(candidates)} admissible "
                        f"candidates admissible ({len(kept)} returned)", effects)
            continue
        candidates = [_with_source(c, candidates, name) for c in kept]
    for cand in candidates:  # again: a reviewer may have changed them
        values, why = _check(cand, state, step, merged)
        if values is not None:
            return {"changes": values, "hypothesis": str(cand.get("hypothesis", ""))[:500],
                    "source": cand.get("source", "proposer")}, rejected
        rejected.append({"source": cand.get("source"), "changes": cand.get("changes"), "why": why})
    cons = [(name, e["constraints"]) for name, e in effects.items() if "constraints" in e]
    cand, _merged = _fallback(state, step, cons, merged, effects)
    return cand, rejected


def _admissible(state: LoopState, step: Step, cands: list[dict], merged: dict) -> bool:
    return any(_check(c, state, step, merged)[0] is not None for c in cands)


def _quarantine(step: Step, name: str, hook: str, why: str, effects: dict) -> None:
    """Invariant: no mechanism can end or stall a run. A mechanism whose output leaves the loop
    with nothing admissible to run is quarantined (journaled with the reason, like a failed call),
    and the iteration goes on without it."""
    step.mechs.quarantine(name, hook, why)
    effects.setdefault(name, {})["quarantined"] = f"{hook}: {why}"


def _draw(state: LoopState, step: Step, merged: dict, frozen: list[str]) -> dict | None:
    """A constrained offline step: seeded draws, then a deterministic sweep of the space's edges
    and of each constraint's range (a narrow range is rarely hit by a random draw)."""
    for _ in range(50):
        cand = step.offline.propose(state.incumbent, state.active, state.history)
        values, _why = _check(cand, state, step, merged, frozen)
        if values is not None:
            return {**cand, "changes": values, "source": "fallback"}
    for name, param in sorted(state.space.items()):
        for value in _edges(param, state.incumbent.get(name), merged["ranges"].get(name)):
            cand = {"changes": {name: value}, "hypothesis": f"constrained step: {name}={value!r}"}
            values, _why = _check(cand, state, step, merged, frozen)
            if values is not None:
                return {**cand, "changes": values, "source": "fallback"}
    return None


def _edges(param: Param, current: Any, rng: tuple | None) -> list:
    if param.type == "bool":
        return [not current]
    if param.type == "choice":
        return list(param.values)
    points = [p for p in (param.min, param.max) if p is not None]
    if rng is not None and rng[0] <= rng[1]:
        points += [rng[0], rng[1], (rng[0] + rng[1]) / 2]
    if len(points) >= 2:
        points.append((points[0] + points[1]) / 2)
    return [int(round(p)) if param.type == "int" else float(p) for p in points]


def _fallback(state: LoopState, step: Step, cons: list, merged: dict, effects: dict) -> tuple[dict, dict]:
    """Every candidate was refused: a constrained offline step. Where the mechanisms' constraints
    leave none, the mechanisms responsible are quarantined one by one (first those whose own
    constraints leave nothing, then the latest to join) until a step fits."""
    cons = list(cons)
    while True:
        cand = _draw(state, step, merged, state.frozen)
        if cand is not None:
            return cand, merged
        if not cons:
            break
        alone = [i for i, c in enumerate(cons) if _draw(state, step, merge_constraints([c]), state.frozen) is None]
        name, _c = cons.pop(alone[0] if alone else len(cons) - 1)
        why = "its constraints leave no admissible candidate" + ("" if alone else " with the others'")
        _quarantine(step, name, "constraints", why, effects)
        merged = merge_constraints(cons)
    # The strategy level froze every constant that could move: one step ignores the freeze.
    cand = _draw(state, step, merged, [])
    if cand is None:
        raise RuntimeError("the search space admits no change at all")  # a task's bug, not a mechanism's
    return cand, merged


def iterate(state: LoopState, step: Step, chosen: dict | None = None) -> dict:
    """Run one iteration and return its record (also appended to the state's history).

    `chosen` resumes an iteration whose trial was interrupted: its recorded candidate is run
    again instead of asking for a new one.
    """
    state.iteration += 1
    view = state.view()
    effects: dict[str, dict] = {}
    rejected: list = []
    if chosen is None:
        chosen, _merged, rejected = choose(state, step, view, effects)
    config = {**state.incumbent, **chosen["changes"]}
    result = step.run_trial(config, chosen["hypothesis"])
    return conclude(state, step, iteration=state.iteration, chosen=chosen, config=config, result=result,
                    view=view, effects=effects, rejected=rejected)


def conclude(state: LoopState, step: Step, *, iteration: int, chosen: dict, config: dict, result: dict,
             view: dict, effects: dict, rejected: list) -> dict:
    """Decide a finished trial against the best at this moment, tell the mechanisms, record it.

    With parallel slots this runs as each trial finishes, so a trial is kept when it beats the
    best known when it ends (not when it was drafted); the incumbent becomes its whole config.
    """
    votes = step.mechs.call_all("accept", result, view)
    for name, v in votes:
        if v is not None:
            effects.setdefault(name, {})["accept"] = v
    verdict, why = decide(mode=step.mode, status=result["status"], val_bpb=result.get("val_bpb"),
                          best=state.best, noise=state.noise, votes=votes)
    repeat = None
    if verdict == "confirm":
        repeat = step.run_trial(config, "repeat to confirm: " + chosen["hypothesis"])
        vals = [v for v in (result.get("val_bpb"), repeat.get("val_bpb")) if v is not None]
        mean = sum(vals) / len(vals)
        confirmed = repeat["status"] == "ok" and mean < state.best
        verdict, why = ("keep", f"confirmed by a repeat (mean {mean:.4f})") if confirmed else (
            "discard", f"not confirmed by a repeat (mean {mean:.4f})")
    record = {
        "iteration": iteration,
        "trial_id": result.get("trial_id"),
        "changes": chosen["changes"],
        "config": config,
        "hypothesis": chosen["hypothesis"],
        "source": chosen["source"],
        "status": result["status"],
        "val_bpb": result.get("val_bpb"),
        "best_before": state.best,
        "kept": verdict == "keep",
        "decision": why,
        "rejected": rejected,
        "effects": effects,
        "repeat_trial_id": repeat.get("trial_id") if repeat else None,
    }
    if verdict == "keep":
        state.incumbent = config
        state.best = min(state.best, result["val_bpb"])
    step.mechs.call_all("observe", {k: record[k] for k in OBSERVE_KEYS})
    state.history.append({k: record[k] for k in HISTORY_KEYS})
    return record
