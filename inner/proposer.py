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


def perturb(param: Param, value: Any, rng: random.Random, scale: float = 1.0) -> Any:
    """A nearby valid value: log-scale steps for numbers, flips for bools, draws for choices."""
    if param.type == "bool":
        return not value
    if param.type == "choice":
        others = [v for v in param.values if v != value]
        return rng.choice(others) if others else value
    lo, hi = param.min, param.max
    if param.type == "int":
        step = max(1, round(abs(value) * 0.25 * scale))
        new = value + rng.choice([-1, 1]) * rng.randint(1, step)
        return int(min(hi, max(lo, new)))
    if value > 0 and lo is not None and lo > 0:
        new = value * math.exp(rng.gauss(0, 0.5 * scale))
    else:
        new = value + rng.gauss(0, 0.1 * scale * ((hi - lo) if hi is not None and lo is not None else 1))
    new = float(f"{new:.3g}")  # three significant digits: readable, still varied
    return float(min(hi, max(lo, new)))


class OfflineProposer:
    """A seeded proposer that perturbs one or two active constants inside the search space."""

    def __init__(self, space: dict[str, Param], seed: int) -> None:
        self.space = space
        self.rng = random.Random(seed)

    def propose(self, incumbent: dict[str, Any], active: list[str], scale: float = 1.0) -> dict:
        names = self.rng.sample(sorted(active), k=min(len(active), self.rng.choice([1, 1, 2])))
        changes = {n: perturb(self.space[n], incumbent[n], self.rng, scale) for n in names}
        desc = ", ".join(f"{n} {incumbent[n]!r} -> {v!r}" for n, v in changes.items())
        return {"changes": changes, "hypothesis": f"offline perturbation: {desc}"}


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
    history: list[dict], sections: list[dict], guidance: str, fence,
) -> list[dict]:
    """The Level 1 prompt. Everything that came from an LLM, a trace or a log is fenced as data."""
    recent = [
        {k: h.get(k) for k in ("iteration", "changes", "val_bpb", "status", "kept", "hypothesis")}
        for h in history[-20:]
    ]
    parts = [
        f"Search space:\n{space_table(space, active)}",
        f"Incumbent config (best so far, val_bpb {best}):\n{json.dumps(incumbent, sort_keys=True)}",
        "Recent trials, newest last:\n" + fence(json.dumps(recent, indent=1), "history"),
    ]
    if guidance:
        parts.append("Guidance from the strategy level:\n" + fence(guidance, "guidance"))
    for s in sections:
        parts.append(f"Search mechanism note ({s['title'][:80]}):\n" + fence(s["text"], "mechanism"))
    parts.append("Propose the next change as one JSON object.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]
