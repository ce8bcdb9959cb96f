"""Typed edits: proposed values are data, never code (security invariant 2).

The published implementation pasted proposed values into the training script as source.
Here a value is parsed with `ast.literal_eval` only, checked against the task's declared
search space for type and range, and only then written, as its `repr`, into a *copy* of the
script. Anything else is rejected with a reason that names the constant.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from typing import Any

# `NAME[i]`: one element of a tuple constant, tunable on its own (`ADAM_BETAS[1]`).
ELEMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]\Z")
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
MAX_EXPONENT = 64          # `2**19` is a constant; `9**9**9` is refused, not computed


class EditError(ValueError):
    """A proposed change that cannot be applied; the message names the constant and why."""


@dataclass(frozen=True)
class Param:
    """One tunable constant of a task: its type and valid range or choices."""

    name: str
    type: str                      # int | float | bool | choice
    min: float | None = None
    max: float | None = None
    values: tuple[Any, ...] = ()
    doc: str = ""

    def check(self, value: Any) -> Any:
        """The value if it is valid for this parameter, else EditError naming it."""
        n = self.name
        if self.type == "bool":
            if not isinstance(value, bool):
                raise EditError(f"{n}: expected a bool, got {type(value).__name__}")
            return value
        if self.type == "choice":
            if isinstance(value, bool) or value not in self.values:
                raise EditError(f"{n}: {value!r} is not one of {list(self.values)}")
            return value
        if isinstance(value, bool):
            raise EditError(f"{n}: expected {self.type}, got bool")
        if self.type == "int":
            if not isinstance(value, int):
                raise EditError(f"{n}: expected an int, got {type(value).__name__}")
        elif self.type == "float":
            if not isinstance(value, int | float):
                raise EditError(f"{n}: expected a float, got {type(value).__name__}")
            value = float(value)
            if not math.isfinite(value):
                raise EditError(f"{n}: {value!r} is not finite")
        else:
            raise EditError(f"{n}: unknown parameter type {self.type!r}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise EditError(f"{n}: {value!r} is outside [{self.min}, {self.max}]")
        return value


def parse_value(name: str, text: str) -> Any:
    """Parse a proposed value from text as a Python literal, and nothing else."""
    if len(text) > 100:
        raise EditError(f"{name}: value text is too long ({len(text)} characters)")
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise EditError(f"{name}: {text!r} is not a literal value") from None


def validate(changes: dict[str, Any], space: dict[str, Param]) -> dict[str, Any]:
    """Check every change against the search space; strings are parsed as literals first."""
    out = {}
    for name, value in changes.items():
        if name not in space:
            raise EditError(f"{name}: not a tunable constant (known: {', '.join(sorted(space))})")
        param = space[name]
        if isinstance(value, str) and (param.type != "choice" or not all(isinstance(v, str) for v in param.values)):
            value = parse_value(name, value)
        out[name] = param.check(value)
    return out


def evaluate(node: ast.AST, names: dict[str, Any] | None = None) -> Any:
    """The value of a constant expression: literals, arithmetic on numbers (`2**19`, `8 * 1024`),
    comparisons and `and`/`or`/`not`, and with `names` the names it gives. An AST walk, never
    `eval` (invariant 2: script text and space files are data); anything else is ValueError."""
    if isinstance(node, ast.Name) and names is not None:
        if node.id not in names:
            raise ValueError(f"unknown name {node.id}")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        left, right = evaluate(node.left, names), evaluate(node.right, names)
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (left, right)):
            raise ValueError("arithmetic on non-numbers")
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > 2**32):
            raise ValueError("power too large")
        try:
            value = _ARITH[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        if isinstance(value, int) and abs(value) > 2**256:
            raise ValueError("integer too large")
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
        v = evaluate(node.operand, names)
        return (not v) if isinstance(node.op, ast.Not) else (-v if isinstance(node.op, ast.USub) else +v)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = evaluate(node.left, names)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = evaluate(comp, names)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        values = [evaluate(v, names) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Tuple):
        return tuple(evaluate(e, names) for e in node.elts)
    if isinstance(node, ast.Subscript) and names is not None:   # `ADAM_BETAS[0]` in a rule
        seq, index = evaluate(node.value, names), evaluate(node.slice, names)
        if not isinstance(seq, tuple) or not isinstance(index, int) or not -len(seq) <= index < len(seq):
            raise ValueError("an index into a tuple constant, in range, is the only subscript")
        return seq[index]
    return ast.literal_eval(node)


@dataclass(frozen=True)
class Rule:
    """A constraint between constants (`TOTAL_BATCH_SIZE % (DEVICE_BATCH_SIZE * MAX_SEQ_LEN) == 0`),
    checked on every candidate before a trial starts; `why` is shown when it fails."""

    expr: str
    why: str = ""

    def holds(self, values: dict[str, Any]) -> bool:
        try:
            return bool(evaluate(ast.parse(self.expr, mode="eval").body, values))
        except (ValueError, TypeError, SyntaxError, OverflowError) as exc:
            raise EditError(f"constraint {self.expr!r} cannot be evaluated: {exc}") from None


class Space(dict):
    """A search space (name -> Param) that also carries rules between constants and the fixed
    values those rules may name (the script's other constants, the harness's)."""

    def __init__(self, params: dict[str, Param] | None = None, rules: tuple[Rule, ...] = (),
                 fixed: dict[str, Any] | None = None) -> None:
        super().__init__(params or {})
        self.rules = tuple(rules)
        self.fixed = dict(fixed or {})

    def check_rules(self, values: dict[str, Any]) -> None:
        """EditError naming the first rule the full set of values breaks."""
        scope = {**self.fixed, **_fold(values, self.fixed)}
        scope.update({k: v for k, v in values.items() if not ELEMENT.match(k)})
        for rule in self.rules:
            if not rule.holds(scope):
                named = ", ".join(f"{n}={scope[n]!r}" for n in sorted(_names(rule.expr)) if n in scope)
                raise EditError(f"breaks the constraint {rule.expr} ({named})" + (f": {rule.why}" if rule.why else ""))


def check_rules(space: dict[str, Param], values: dict[str, Any]) -> None:
    """A Space's rules on a full set of values; nothing for a plain dict space."""
    if isinstance(space, Space):
        space.check_rules(values)


def _names(expr: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)}


def _fold(values: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Element edits (`NAME[i]`) folded into whole tuples, starting from the current tuples."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        m = ELEMENT.match(name)
        if m is None:
            continue
        base, i = m.group(1), int(m.group(2))
        if not isinstance(current.get(base), tuple) or i >= len(current[base]):
            raise EditError(f"{name}: the script has no tuple constant {base} with an element {i}")
        tup = list(out.get(base, current[base]))
        tup[i] = value
        out[base] = tuple(tup)
    return out


def _constants(tree: ast.Module) -> tuple[dict[str, ast.Assign], set[str]]:
    """Top-level `NAME = ...` assignments, the only places an edit may write, and the names
    assigned more than once at top level: those are no constants (a later assignment would
    override an edit), but they only matter when an edit names them. A checkout's script may
    well reassign `model = torch.compile(model)`; that must not make its constants unreadable."""
    found: dict[str, ast.Assign] = {}
    repeated: set[str] = set()
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            name = node.targets[0].id
            if name in found:
                repeated.add(name)
            found[name] = node
    return found, repeated


def read_constants(source: str) -> dict[str, Any]:
    """The current literal values of the script's top-level constants (each assigned once)."""
    out = {}
    nodes, repeated = _constants(ast.parse(source))
    for name, node in nodes.items():
        if name in repeated:
            continue
        try:
            out[name] = evaluate(node.value)
        except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RecursionError):
            continue
    return out


def read_values(source: str) -> dict[str, Any]:
    """`read_constants`, plus one `NAME[i]` entry per element of each tuple of numbers."""
    out = read_constants(source)
    for name, value in list(out.items()):
        if isinstance(value, tuple) and value and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                      for v in value):
            out.update({f"{name}[{i}]": v for i, v in enumerate(value)})
    return out


def apply(source: str, values: dict[str, Any]) -> str:
    """A copy of `source` with the given constants rewritten; values must already be checked."""
    lines = source.splitlines(keepends=True)
    nodes, repeated = _constants(ast.parse(source))
    folded = _fold(values, read_constants(source))
    values = {**{k: v for k, v in values.items() if not ELEMENT.match(k)}, **folded}
    for name, value in values.items():
        node = nodes.get(name)
        if node is None:
            raise EditError(f"{name}: the script has no top-level constant of that name")
        if name in repeated:
            raise EditError(f"{name}: assigned more than once at top level of the script")
        if node.lineno != node.end_lineno:
            raise EditError(f"{name}: its assignment spans several lines; cannot edit it safely")
        line = lines[node.lineno - 1]
        v = node.value
        literal = repr(value)
        # The literal text is the repr of a checked bool/int/float/str (or a tuple of checked
        # numbers): data, never code.
        if ast.literal_eval(literal) != value:
            raise EditError(f"{name}: {value!r} does not round-trip as a literal")
        lines[node.lineno - 1] = line[: v.col_offset] + literal + line[v.end_col_offset :]
    edited = "".join(lines)
    if read_constants(edited).keys() != read_constants(source).keys():
        raise EditError("edit changed the set of constants; refused")
    return edited
