"""Typed edits: proposed values are data, never code (security invariant 2).

The published implementation pasted proposed values into the training script as source.
Here a value is parsed with `ast.literal_eval` only, checked against the task's declared
search space for type and range, and only then written, as its `repr`, into a *copy* of the
script. Anything else is rejected with a reason that names the constant.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any


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
        if isinstance(value, str) and space[name].type != "choice":
            value = parse_value(name, value)
        out[name] = space[name].check(value)
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
            out[name] = ast.literal_eval(node.value)
        except ValueError:
            continue
    return out


def apply(source: str, values: dict[str, Any]) -> str:
    """A copy of `source` with the given constants rewritten; values must already be checked."""
    lines = source.splitlines(keepends=True)
    nodes, repeated = _constants(ast.parse(source))
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
        # The literal text is the repr of a checked bool/int/float/str: data, never code.
        if ast.literal_eval(literal) != value:
            raise EditError(f"{name}: {value!r} does not round-trip as a literal")
        lines[node.lineno - 1] = line[: v.col_offset] + literal + line[v.end_col_offset :]
    edited = "".join(lines)
    if read_constants(edited).keys() != read_constants(source).keys():
        raise EditError("edit changed the set of constants; refused")
    return edited
