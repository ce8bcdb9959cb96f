"""Level 1.5: every K iterations, read the trace and adjust the search configuration.

It freezes constants that keep failing, unfreezes frozen ones when the search stalls, and
writes guidance for the proposer. It never lets fewer than `min_active` constants stay active.
The LLM's reply is data: unknown names are dropped and the floor is enforced here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SearchConfig:
    active: list[str]
    frozen: list[str] = field(default_factory=list)
    guidance: str = ""

    def to_dict(self) -> dict:
        return {"active": self.active, "frozen": self.frozen, "guidance": self.guidance}


def param_stats(history: list[dict]) -> dict[str, dict[str, int]]:
    """Per constant: how often it was changed, and how often such a change was kept."""
    tried, kept = Counter(), Counter()
    for h in history:
        for name in h.get("changes") or {}:
            tried[name] += 1
            kept[name] += bool(h.get("kept"))
    return {n: {"tried": tried[n], "kept": kept[n]} for n in tried}


def apply_decision(cfg: SearchConfig, freeze: list, unfreeze: list, guidance: str,
                   names: list[str], min_active: int) -> SearchConfig:
    """A new config from a (possibly LLM-written) decision, with names checked and the floor kept."""
    frozen = [n for n in cfg.frozen if n not in set(unfreeze)]
    active = [n for n in names if n not in frozen]
    for n in freeze:
        if n in active and len(active) > min_active:
            active.remove(n)
            frozen.append(n)
    return SearchConfig(active=active, frozen=frozen, guidance=str(guidance)[:2000])


def offline_decision(cfg: SearchConfig, history: list[dict]) -> dict:
    """The heuristic used offline: freeze what failed 3+ times, unfreeze when nothing is kept."""
    stats = param_stats(history)
    freeze = [n for n in cfg.active if stats.get(n, {}).get("tried", 0) >= 3 and stats[n]["kept"] == 0]
    recent_keeps = sum(bool(h.get("kept")) for h in history[-6:])
    unfreeze = cfg.frozen[:1] if recent_keeps == 0 and cfg.frozen else []
    good = sorted((n for n in stats if stats[n]["kept"]), key=lambda n: -stats[n]["kept"])
    guidance = (f"Changes to {', '.join(good[:3])} have been kept before; refine them." if good
                else "No change has been kept yet; try larger steps on learning rate and model size.")
    return {"freeze": freeze, "unfreeze": unfreeze, "guidance": guidance}


def decision_schema(names: list[str]) -> dict:
    """The JSON schema of a Level 1.5 decision, for endpoints with structured output."""
    name_list = {"type": "array", "items": {"enum": sorted(names)}, "maxItems": len(names)}
    return {
        "type": "object",
        "properties": {"freeze": name_list, "unfreeze": name_list,
                       "guidance": {"type": "string", "maxLength": 600}},
        "required": ["freeze", "unfreeze", "guidance"],
        "additionalProperties": False,
    }


def llm_messages(cfg: SearchConfig, history: list[dict], fence) -> list[dict]:
    stats = param_stats(history)
    return [
        {"role": "system", "content": (
            "You steer a hyperparameter search. Reply with one JSON object: "
            '{"freeze": [names], "unfreeze": [names], "guidance": "short advice for the proposer"}.')},
        {"role": "user", "content": "\n\n".join([
            f"Active: {cfg.active}\nFrozen: {cfg.frozen}",
            "Per-constant statistics:\n" + fence(json.dumps(stats, sort_keys=True), "stats"),
            "Last trials:\n" + fence(json.dumps(history[-15:], default=str), "trace"),
        ])},
    ]
