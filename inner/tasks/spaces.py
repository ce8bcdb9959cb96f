"""Search spaces from TOML: a bundled task's `task.toml`, and `--space FILE` for a checkout.

Both use the same `[params.NAME]` tables (type, min, max, values, doc). A `--space` file
corrects a space inferred from a checkout's train.py (`karpathy.py`):

    exclude = ["H100_BF16_PEAK_FLOPS"]        # never tunable
    [params.DEVICE_BATCH_SIZE]                # overrides (or adds) one parameter
    type = "choice"
    values = [4, 8, 16]
    [params."ADAM_BETAS[1]"]                  # an element of a tuple constant
    type = "float"
    min = 0.9
    max = 0.999
    [[rules]]                                  # checked on every candidate before its trial
    expr = "TOTAL_BATCH_SIZE % (DEVICE_BATCH_SIZE * MAX_SEQ_LEN) == 0"
    why = "train.py asserts it: gradient accumulation needs whole micro-batches"
    [start]                                    # where the run starts (its baseline), if not
    TOTAL_BATCH_SIZE = 4096                    # the script's own values: a slow machine's first try

A rule is an expression over the constants of train.py and prepare.py (arithmetic, comparisons,
and/or/not), evaluated by an AST walk (`edits.evaluate`), never by `eval`: a space file is data.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any

from bilevel.inner.edits import EditError, Param, Rule, Space, validate

TYPES = ("int", "float", "bool", "choice")


def params_from_toml(table: dict[str, Any], where: str) -> dict[str, Param]:
    """The `[params.NAME]` tables as Params; EditError naming the file and the key when one is wrong."""
    out = {}
    for name, p in table.items():
        if not isinstance(p, dict) or p.get("type") not in TYPES:
            raise EditError(f"{where}: [params.{name}] needs type = one of {', '.join(TYPES)}")
        unknown = sorted(set(p) - {"type", "min", "max", "values", "doc"})
        if unknown:
            raise EditError(f"{where}: [params.{name}] has unknown keys {unknown}")
        if p["type"] == "choice" and not p.get("values"):
            raise EditError(f"{where}: [params.{name}] is a choice with no values")
        out[name] = Param(name=name, type=p["type"], min=p.get("min"), max=p.get("max"),
                          values=tuple(p.get("values", ())), doc=p.get("doc", ""))
    return out


def load(path: Path, inferred: dict[str, Param], fixed: dict[str, Any]) -> Space:
    """The inferred space corrected by a `--space` file; `fixed` holds the scripts' constants
    (what rules may name, and what a parameter must be). Every default must lie in the space."""
    where = f"--space {path}"
    try:
        spec = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EditError(f"{where}: cannot read it: {exc}") from None
    unknown = sorted(set(spec) - {"params", "exclude", "rules", "task", "start"})
    if unknown:
        raise EditError(f"{where}: unknown tables or keys {unknown} (known: params, exclude, rules, start)")
    params = {**inferred, **params_from_toml(spec.get("params", {}), where)}
    for name in spec.get("exclude", []):
        params.pop(name, None)
    start = spec.get("start", {}) if isinstance(spec.get("start", {}), dict) else {}
    for name, param in params.items():
        if name not in fixed:
            raise EditError(f"{where}: {name} is no top-level constant of train.py with a literal value")
        try:
            param.check(start.get(name, fixed[name]))
        except EditError as exc:
            whose = "[start]" if name in start else "the script's own value"
            raise EditError(f"{where}: {whose} does not fit: {exc}") from None
    rules = []
    for i, r in enumerate(spec.get("rules", [])):
        if not isinstance(r, dict) or not isinstance(r.get("expr"), str):
            raise EditError(f"{where}: [[rules]] #{i + 1} needs expr = \"...\"")
        try:
            names = {n.id for n in ast.walk(ast.parse(r["expr"], mode="eval")) if isinstance(n, ast.Name)}
        except SyntaxError as exc:
            raise EditError(f"{where}: rule {r['expr']!r} is not an expression: {exc.msg}") from None
        missing = sorted(n for n in names if n not in fixed)
        if missing:
            raise EditError(f"{where}: rule {r['expr']!r} names {missing}, no constants of train.py or prepare.py")
        rules.append(Rule(expr=r["expr"], why=str(r.get("why", ""))))
    space = Space(params, rules=tuple(rules), fixed=fixed)
    try:
        space.check_rules({k: v for k, v in start.items() if k in params})
    except EditError as exc:
        raise EditError(f"{where}: the script's own values (and [start]) break a rule: {exc}") from None
    return space


def start_values(path: Path, space: Space) -> dict[str, Any]:
    """The `[start]` table of a `--space` file, checked against the space and its rules: the values
    the run starts from (its baseline), written into the task's copy of the script only."""
    start = tomllib.loads(Path(path).read_text()).get("start", {})
    if not isinstance(start, dict):
        raise EditError(f"--space {path}: [start] must be a table of NAME = value")
    try:
        values = validate(start, space)
        space.check_rules(values)
    except EditError as exc:
        raise EditError(f"--space {path}: [start]: {exc}") from None
    return values
