"""The mechanism validation pipeline: size and AST policy, compile, load, smoke test, verdict.

Why stages: each names where and why a mechanism was refused, and the cheap host-side
checks (stage 1, in ast_policy.py, only parses, it never executes: invariant 1) stop most
bad sources before a container starts. Stages 2-4 run inside ONE sandbox (invariant 3), so a
check costs one container start. Stage 1 duplicates some of the sandbox's refusals on
purpose: either layer alone must stop an escape, and the red-team suite tests both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bilevel.runtime.mechanisms.ast_policy import PolicyViolation, check_source
from bilevel.runtime.mechanisms.host import SandboxedMechanism
from bilevel.runtime.policy import Policy


@dataclass
class Verdict:
    """The outcome of `mechanism check`: where it stopped and why, plus what each hook said."""

    accepted: bool
    stage: str                 # size | ast | start | compile | load | smoke | accepted
    reason: str
    name: str | None = None
    hooks: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    printed: str = ""

    def to_json(self) -> dict:
        return {"accepted": self.accepted, "stage": self.stage, "reason": self.reason,
                "name": self.name, "hooks": self.hooks, "outputs": self.outputs,
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
                "printed": self.printed}


# ---------------------------------------------------------------------------------------------
# Stage 4: a synthetic trace
# ---------------------------------------------------------------------------------------------

SPACE = {
    "LEARNING_RATE": {"type": "float", "min": 1e-5, "max": 3e-2, "values": []},
    "WEIGHT_DECAY": {"type": "float", "min": 0.0, "max": 0.5, "values": []},
    "N_LAYER": {"type": "int", "min": 1, "max": 6, "values": []},
    "N_EMBD": {"type": "int", "min": 16, "max": 256, "values": []},
    "DROPOUT": {"type": "float", "min": 0.0, "max": 0.5, "values": []},
    "TIE_EMBEDDINGS": {"type": "bool", "min": None, "max": None, "values": []},
}
INCUMBENT = {"LEARNING_RATE": 3e-3, "WEIGHT_DECAY": 0.1, "N_LAYER": 2, "N_EMBD": 64,
             "DROPOUT": 0.0, "TIE_EMBEDDINGS": True}
_STEPS = [("LEARNING_RATE", 6e-3), ("N_LAYER", 3), ("DROPOUT", 0.1), ("N_EMBD", 96),
          ("LEARNING_RATE", 1.5e-3), ("WEIGHT_DECAY", 0.05), ("TIE_EMBEDDINGS", False),
          ("N_LAYER", 4), ("DROPOUT", 0.05), ("LEARNING_RATE", 4e-3), ("N_EMBD", 128),
          ("WEIGHT_DECAY", 0.2)]


def synthetic_trace(n: int = 10) -> tuple[list[dict], dict]:
    """(observe records, final view): a plausible run of `n` trials, deterministic."""
    incumbent, best = dict(INCUMBENT), 2.40
    records, history = [], []
    for i in range(n):
        name, value = _STEPS[i % len(_STEPS)]
        changes = {name: value}
        config = {**incumbent, **changes}
        status = "crash" if i == 6 else "ok"
        bpb = None if status != "ok" else round(best - 0.02 * ((i * 7) % 5 - 2), 4)
        kept = bpb is not None and bpb < best
        hyp = f"try {name}={value}"
        records.append({"iteration": i + 1, "changes": changes, "config": config, "val_bpb": bpb,
                        "best_before": best, "status": status, "hypothesis": hyp, "kept": kept})
        history.append({"iteration": i + 1, "changes": changes, "val_bpb": bpb, "status": status,
                        "kept": kept, "hypothesis": hyp, "source": "proposer"})
        if kept:
            incumbent, best = config, bpb
    view = {"iteration": n + 1, "history": history, "incumbent": incumbent, "best": best,
            "baseline": 2.40, "space": SPACE, "active": list(SPACE), "frozen": []}
    return records, view


def smoke_candidates(view: dict) -> list[dict]:
    return [{"changes": {"LEARNING_RATE": 5e-3}, "hypothesis": "a higher learning rate"},
            {"changes": {"N_LAYER": 5}, "hypothesis": "a deeper model"},
            {"changes": {"DROPOUT": 0.2, "WEIGHT_DECAY": 0.3}, "hypothesis": "regularise"}]


def smoke_test(mech: SandboxedMechanism, n: int = 10) -> tuple[dict[str, Any], str | None, str]:
    """Stage 4: every defined hook on the synthetic trace; (outputs, failure or None, printed)."""
    records, view = synthetic_trace(n)
    outputs: dict[str, Any] = {}
    plan: list[tuple[str, tuple]] = [("observe", (r,)) for r in records]
    plan += [("context", (view,)), ("constraints", (view,)), ("suggest", (view,))]
    plan += [("review", (smoke_candidates(view), view)), ("accept", (records[-1], view))]
    printed = []
    for hook, args in plan:
        if hook not in mech.hooks:
            continue
        r = mech.call(hook, *args)
        printed.append(r.printed)
        if not r.ok:
            return outputs, f"{hook}: {r.outcome}: {r.error}", "".join(printed)[-4000:]
        outputs[hook] = r.value
    return outputs, None, "".join(printed)[-4000:]


def validate(source: str, policy: Policy, *, seed: int = 0, name: str | None = None,
             transport_factory=None) -> Verdict:
    """Run the whole pipeline on one source; the verdict names the stage that decided."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        check_source(source, policy)
    except PolicyViolation as exc:
        timings["ast"] = (time.perf_counter() - t0) * 1000
        return Verdict(False, exc.stage, str(exc), timings_ms=timings)
    timings["ast"] = (time.perf_counter() - t0) * 1000
    mech = SandboxedMechanism(name or "check", source, policy=policy, seed=seed,
                              transport_factory=transport_factory)
    try:
        t1 = time.perf_counter()
        loaded = mech.start()
        timings["start_compile_load"] = (time.perf_counter() - t1) * 1000
        if not loaded.ok:
            return Verdict(False, loaded.stage, loaded.error or "load failed", timings_ms=timings)
        t2 = time.perf_counter()
        outputs, failure, printed = smoke_test(mech)
        timings["smoke"] = (time.perf_counter() - t2) * 1000
        timings["total"] = (time.perf_counter() - t0) * 1000
        if failure:
            return Verdict(False, "smoke", failure, mech.name, mech.hooks, outputs, timings,
                           printed)
        if not mech.hooks:
            return Verdict(False, "smoke", "the Mechanism class defines no hook", mech.name,
                           mech.hooks, outputs, timings, printed)
        return Verdict(True, "accepted", "all stages passed", mech.name, mech.hooks, outputs,
                       timings, printed)
    finally:
        mech.close()

