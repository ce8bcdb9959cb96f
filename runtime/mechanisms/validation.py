"""The mechanism validation pipeline: size and AST policy, compile, load, smoke test, verdict.

Why stages: each names where and why a mechanism was refused, and the cheap host-side
checks (stage 1 only parses, it never executes: invariant 1) stop most bad sources before a
container starts. Stages 2-4 run inside ONE sandbox (invariant 3), so a check costs one
container start. Stage 1 duplicates some of the sandbox's refusals on purpose: either layer
alone must stop an escape, and the red-team suite tests both.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field
from typing import Any

from bilevel.runtime.mechanisms.host import SandboxedMechanism
from bilevel.runtime.policy import Policy

MAX_AST_DEPTH = 60
MAX_NODES = 30_000
MAX_BRACKET_DEPTH = 40
# Invariant 3: names that would reach outside the policy layer if they existed in the sandbox
# (they do not; refusing them here gives a clear reason before a container starts).
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "globals", "locals", "vars", "dir", "type", "super",
    "setattr", "delattr", "breakpoint", "input", "help", "memoryview", "bytearray", "bytes",
    "id", "hash", "exit", "quit", "classmethod", "staticmethod", "property", "print_function",
})
BLOCKED_ATTRS = frozenset({
    "format_map", "mro", "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code",
    "cr_await", "cr_origin", "ag_frame", "ag_code", "ag_await", "tb_frame", "tb_next",
    "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace", "f_generator",
    "co_code", "co_consts", "co_names", "func_globals", "func_code", "func_closure",
    "im_func", "im_self", "with_traceback",
})
FORBIDDEN_NODES = {
    ast.AsyncFunctionDef: "async functions", ast.AsyncFor: "async for", ast.AsyncWith: "async with",
    ast.Await: "await", ast.Global: "global statements", ast.Nonlocal: "nonlocal statements",
    ast.Match: "match statements (class patterns read attributes without the guard)",
    ast.TryStar: "except* (exception groups)",
}


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


class PolicyViolation(ValueError):
    """Stage 1 refused the source; the message names the line and the rule."""

    def __init__(self, message: str, stage: str = "ast") -> None:
        super().__init__(message)
        self.stage = stage


def _bracket_depth(source: str) -> int:
    """An upper bound of bracket nesting, found without the parser (which can be made to
    recurse deeply on a compile bomb)."""
    depth = deepest = 0
    for ch in source:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth = max(depth - 1, 0)
    return deepest


def _ast_depth(tree: ast.AST) -> tuple[int, int]:
    deepest, count, stack = 0, 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        count += 1
        deepest = max(deepest, d)
        if d > MAX_AST_DEPTH or count > MAX_NODES:
            break
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest, count


def _bad_name(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and name != "_"


def check_source(source: str, policy: Policy) -> ast.Module:
    """Stage 1: size and AST policy. Parses only; never compiles or runs anything."""
    cap = int(policy.mechanism["max_source_kb"]) * 1024
    size = len(source.encode("utf-8", "replace"))
    if size > cap:
        raise PolicyViolation(f"source is {size} bytes, over the cap of {cap}", "size")
    if _bracket_depth(source) > MAX_BRACKET_DEPTH:
        raise PolicyViolation(f"brackets nested deeper than {MAX_BRACKET_DEPTH}")
    try:
        tree = ast.parse(source, "<mechanism>")
    except (SyntaxError, ValueError) as exc:
        raise PolicyViolation(f"not valid Python: {exc}") from None
    except (RecursionError, MemoryError):
        raise PolicyViolation("source too deeply nested to parse") from None
    depth, count = _ast_depth(tree)
    if depth > MAX_AST_DEPTH:
        raise PolicyViolation(f"syntax tree deeper than {MAX_AST_DEPTH}")
    if count > MAX_NODES:
        raise PolicyViolation(f"syntax tree larger than {MAX_NODES} nodes")
    facades = set(policy.mechanism["facades"])
    top = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Mechanism"]
    if len(top) != 1:
        raise PolicyViolation(
            "the source must define exactly one top-level class Mechanism"
            f" (found {len(top)})"
        )
    init_ok = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
               for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"}
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")

        def refuse(why: str, line=line) -> None:
            raise PolicyViolation(f"line {line}: {why}")

        for bad, what in FORBIDDEN_NODES.items():
            if isinstance(node, bad):
                refuse(f"{what} are not allowed")
        if isinstance(node, ast.ClassDef):
            if node.name == "Mechanism" and node not in top:
                refuse("a second class Mechanism")
            if _bad_name(node.name):
                refuse(f'class name "{node.name}" starts with "_"')
            if node.keywords:
                refuse("class keywords (metaclass=...) are not allowed")
        elif isinstance(node, ast.FunctionDef | ast.Lambda):
            named = isinstance(node, ast.FunctionDef) and _bad_name(node.name)
            if named and id(node) not in init_ok:
                refuse(f'function "{node.name}": only __init__ may start with "_"')
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None and _bad_name(arg.arg):
                    refuse(f'parameter "{arg.arg}" starts with "_"')
        elif isinstance(node, ast.Name):
            if _bad_name(node.id):
                refuse(f'name "{node.id}" starts with "_"')
            if node.id in FORBIDDEN_NAMES:
                refuse(f'"{node.id}" is not available in the sandbox')
            if node.id == "Mechanism" and not isinstance(node.ctx, ast.Load):
                refuse("rebinding Mechanism")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") or node.attr in BLOCKED_ATTRS:
                refuse(f'attribute "{node.attr}" is not allowed')
        elif isinstance(node, ast.keyword):
            if _bad_name(node.arg):
                refuse(f'keyword "{node.arg}" starts with "_"')
        elif isinstance(node, ast.ExceptHandler):
            if _bad_name(node.name):
                refuse(f'name "{node.name}" starts with "_"')
        elif isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if isinstance(node, ast.ImportFrom) and node.level:
                refuse("relative imports are not allowed")
            for mod in mods:
                if mod not in facades:
                    refuse(f"import of {mod!r} is not allowed (facades: {sorted(facades)})")
            for a in node.names:
                if a.name == "*" or _bad_name(a.name) or _bad_name(a.asname):
                    refuse(f'import of "{a.name}" is not allowed')
    return tree


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

