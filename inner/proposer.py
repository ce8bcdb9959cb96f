"""Level 1 proposals: the offline seeded proposer, and the LLM proposer.

A proposal is data: `{"changes": {NAME: value}, "hypothesis": str}`. Whoever proposes, the
runtime validates it against the search space and the mechanisms' constraints before any
edit is made (inner/candidates.py).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from .edits import Param

SYSTEM = (
    "You tune the hyperparameter constants of a small GPT training script to minimise val_bpb "
    "(validation bits per byte, lower is better) under a fixed training time budget. "
    "Reply with one JSON object only: {\"changes\": {\"NAME\": value, ...}, \"hypothesis\": \"...\"}. "
    "Change one to three constants. Values must be plain literals inside the declared ranges."
)


HYPOTHESIS_CHARS = 200   # of each past trial's hypothesis, in the proposal prompt


def perturb(param: Param, value: Any, rng: random.Random, scale: float = 1.0) -> Any:
    """A nearby valid value: log-scale steps for numbers, flips for bools, draws for choices.
    Steps are wide (about x2.2 or /2.2 at one sigma for positive floats, up to half the value for
    ints): with one baseline and a few dozen trials, timid steps drown in run-to-run noise."""
    if param.type == "bool":
        return not value
    if param.type == "choice":
        others = [v for v in param.values if v != value]
        return rng.choice(others) if others else value
    lo, hi = param.min, param.max
    if param.type == "int":
        step = max(1, round(abs(value) * 0.5 * scale))
        new = value + rng.choice([-1, 1]) * rng.randint(1, step)
        return int(min(hi, max(lo, new)))
    if value > 0 and lo is not None and lo > 0:
        new = value * math.exp(rng.gauss(0, 0.8 * scale))
    else:
        new = value + rng.gauss(0, 0.1 * scale * ((hi - lo) if hi is not None and lo is not None else 1))
    return _clamp(param, new)


def _clamp(param: Param, new: float) -> Any:
    if param.type == "int":
        return int(min(param.max, max(param.min, round(new))))
    new = float(f"{new:.3g}")  # three significant digits: readable, still varied
    return float(min(param.max, max(param.min, new)))


def extend(param: Param, before: Any, after: Any) -> Any:
    """One more step the same way from `before` to `after`: the same ratio for positive
    log-scale floats, the same difference otherwise. None for bools and choices."""
    if param.type not in ("int", "float") or before == after:
        return None
    if param.type == "float" and before > 0 and after > 0 and param.min is not None and param.min > 0:
        return _clamp(param, after * after / before)
    return _clamp(param, after + (after - before))


class OfflineProposer:
    """A seeded proposer that perturbs one or two active constants inside the search space.

    It covers the space first: it picks among the active constants changed least often so far,
    so a short run touches every constant before any twice (a uniform draw over a dozen
    constants leaves a third untouched after a dozen iterations). And it follows through
    (pattern search): when its last change was kept, its next proposal pushes the same
    constants one more step the same way, until a step is not kept."""

    def __init__(self, space: dict[str, Param], seed: int) -> None:
        self.space = space
        self.rng = random.Random(seed)
        self.last: dict[str, tuple[Any, Any]] = {}   # its last proposal: name -> (before, after)

    def propose(self, incumbent: dict[str, Any], active: list[str], history: list[dict] = (),
                scale: float = 1.0) -> dict:
        follow = {n: extend(self.space[n], a, b) for n, (a, b) in self.last.items()
                  if n in active and incumbent.get(n) == b}
        changes = {n: v for n, v in follow.items() if v is not None and v != incumbent[n]}
        tag = "offline perturbation (follow-through)"
        if not changes:
            touched = {n: 0 for n in active}
            for h in history:
                for n in h.get("changes") or {}:
                    if n in touched:
                        touched[n] += 1
            k = min(len(active), self.rng.choice([1, 1, 2]))
            order = sorted(sorted(active), key=lambda n: (touched[n], self.rng.random()))
            changes = {n: perturb(self.space[n], incumbent[n], self.rng, scale) for n in order[:k]}
            tag = "offline perturbation"
        self.last = {n: (incumbent[n], v) for n, v in changes.items()}
        desc = ", ".join(f"{n} {incumbent[n]!r} -> {v!r}" for n, v in changes.items())
        return {"changes": changes, "hypothesis": f"{tag}: {desc}"}


def proposal_schema(space: dict[str, Param], active: list[str]) -> dict:
    """The JSON schema of a proposal, for endpoints with structured output: one to three of the
    active constants, each of its declared type and range. The runtime checks every value again
    (inner/candidates.py): the schema helps a weak model, it is not the check."""
    props: dict[str, dict] = {}
    for name in sorted(active):
        p = space[name]
        if p.type == "bool":
            props[name] = {"type": "boolean"}
        elif p.type == "choice":
            props[name] = {"enum": list(p.values)}
        else:
            props[name] = {"type": "integer" if p.type == "int" else "number"}
            if p.min is not None:
                props[name]["minimum"] = p.min
            if p.max is not None:
                props[name]["maximum"] = p.max
    return {
        "type": "object",
        "properties": {
            "changes": {"type": "object", "properties": props, "additionalProperties": False,
                        "minProperties": 1, "maxProperties": 3},
            "hypothesis": {"type": "string", "maxLength": 300},
        },
        "required": ["changes", "hypothesis"],
        "additionalProperties": False,
    }


def space_table(space: dict[str, Param], active: list[str]) -> str:
    rows = []
    for name in sorted(space):
        p = space[name]
        rng = f"one of {list(p.values)}" if p.type == "choice" else (
            "true/false" if p.type == "bool" else f"{p.type} in [{p.min}, {p.max}]")
        state = "" if name in active else "  (frozen: do not change)"
        rows.append(f"- {name}: {rng}. {p.doc}{state}")
    return "\n".join(rows)


def proposal_messages(
    *, space: dict[str, Param], active: list[str], incumbent: dict, best: float | None,
    history: list[dict], sections: list[dict], guidance: str, fence, pending: list[dict] = (),
) -> list[dict]:
    """The Level 1 prompt. Everything that came from an LLM, a trace or a log is fenced as data."""
    recent = [  # one bounded row per trial: a hypothesis is cut to HYPOTHESIS_CHARS
        {k: (str(h.get(k) or "")[:HYPOTHESIS_CHARS] if k == "hypothesis" else h.get(k))
         for k in ("iteration", "changes", "val_bpb", "status", "kept", "hypothesis")}
        for h in history[-20:]
    ]
    parts = [
        f"Search space:\n{space_table(space, active)}",
        f"Incumbent config (best so far, val_bpb {best}):\n{json.dumps(incumbent, sort_keys=True)}",
        "Recent trials, newest last:\n" + fence(json.dumps(recent, indent=1), "history"),
    ]
    if pending:
        parts.append(pending_section(pending, fence))
    if guidance:
        parts.append("Guidance from the strategy level:\n" + fence(guidance, "guidance"))
    for s in sections:
        # A section's title and text both came from a mechanism: data, fenced together.
        parts.append("Search mechanism note:\n" + fence(f"{s['title'][:80]}\n{s['text']}", "mechanism"))
    parts.append("Propose the next change as one JSON object.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def pending_section(pending: list[dict], fence) -> str:
    """Trials still running in other slots: their results are unknown, and proposing one of
    them again is refused, so the LLM is told to propose something else."""
    rows = [{k: p.get(k) for k in ("iteration", "changes", "hypothesis", "status")} for p in pending]
    return ("Trials running now (results not known yet; do not propose these again):\n"
            + fence(json.dumps(rows, indent=1), "pending"))
