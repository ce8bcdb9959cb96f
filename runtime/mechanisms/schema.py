"""What each mechanism hook may return; anything else is invalid output (and quarantines).

Why strict: hook outputs steer the inner loop and end up in prompts and the journal. The
checks run on plain JSON data the host decoded itself (invariant 3: nothing from the sandbox
is ever called); they return a normalised copy, so callers never hold sandbox-shaped data.
"""

from __future__ import annotations

from typing import Any

from bilevel.runtime.vocabulary import Hook

HOOKS = tuple(h.value for h in Hook)  # the vocabulary, in its order
MAX_SECTIONS = 8
MAX_TITLE = 200
MAX_TEXT = 4000
MAX_CANDIDATES = 32
MAX_NAMES = 64
MAX_NAME = 100
MAX_HYPOTHESIS = 2000
MAX_STR_VALUE = 200


class SchemaError(ValueError):
    """A hook output that does not have the hook's shape; the message says where."""


def _str(v: Any, where: str, cap: int) -> str:
    if not isinstance(v, str):
        raise SchemaError(f"{where}: expected a string, got {type(v).__name__}")
    if len(v) > cap:
        raise SchemaError(f"{where}: string longer than {cap} characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise SchemaError(f"{where}: string is not valid Unicode") from None
    return v


def _number(v: Any, where: str) -> float | int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SchemaError(f"{where}: expected a number, got {type(v).__name__}")
    return v


def _list(v: Any, where: str, cap: int) -> list:
    if not isinstance(v, list):
        raise SchemaError(f"{where}: expected a list, got {type(v).__name__}")
    if len(v) > cap:
        raise SchemaError(f"{where}: more than {cap} items")
    return v


def _dict(v: Any, where: str, keys: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(v, dict):
        raise SchemaError(f"{where}: expected an object, got {type(v).__name__}")
    extra = set(v) - keys
    if extra:
        raise SchemaError(f"{where}: unexpected keys {sorted(extra)[:5]}")
    missing = required - set(v)
    if missing:
        raise SchemaError(f"{where}: missing keys {sorted(missing)}")
    return v


def _observe(v: Any) -> None:
    if v is not None:
        raise SchemaError("observe: must return None")
    return None


def _context(v: Any) -> list[dict]:
    out = []
    for i, s in enumerate(_list(v, "context", MAX_SECTIONS)):
        _dict(s, f"context[{i}]", {"title", "text"}, {"title", "text"})
        out.append({"title": _str(s["title"], f"context[{i}].title", MAX_TITLE),
                    "text": _str(s["text"], f"context[{i}].text", MAX_TEXT)})
    return out


def _constraints(v: Any) -> dict:
    _dict(v, "constraints", {"forbid", "ranges"})
    forbid = [_str(n, f"constraints.forbid[{i}]", MAX_NAME)
              for i, n in enumerate(_list(v.get("forbid", []), "constraints.forbid", MAX_NAMES))]
    ranges_in = v.get("ranges", {})
    if not isinstance(ranges_in, dict) or len(ranges_in) > MAX_NAMES:
        raise SchemaError(f"constraints.ranges: expected an object of at most {MAX_NAMES} names")
    ranges = {}
    for name, r in ranges_in.items():
        where = f"constraints.ranges.{name[:40]}"
        _str(name, where, MAX_NAME)
        _list(r, where, 2)
        if len(r) != 2:
            raise SchemaError(f"{where}: expected [lo, hi]")
        lo, hi = _number(r[0], where), _number(r[1], where)
        if lo > hi:
            raise SchemaError(f"{where}: lo > hi")
        ranges[name] = [lo, hi]
    return {"forbid": forbid, "ranges": ranges}


def _candidate(c: Any, where: str) -> dict:
    _dict(c, where, {"changes", "hypothesis"}, {"changes"})
    changes = c["changes"]
    if not isinstance(changes, dict) or not changes or len(changes) > MAX_NAMES:
        raise SchemaError(f"{where}.changes: expected a non-empty object of at most {MAX_NAMES}")
    out = {}
    for name, value in changes.items():
        _str(name, f"{where}.changes", MAX_NAME)
        if isinstance(value, str):
            _str(value, f"{where}.changes.{name[:40]}", MAX_STR_VALUE)
        elif value is not None and not isinstance(value, bool | int | float):
            raise SchemaError(f"{where}.changes.{name[:40]}: expected a JSON scalar")
        out[name] = value
    hyp = _str(c.get("hypothesis", ""), f"{where}.hypothesis", MAX_HYPOTHESIS)
    return {"changes": out, "hypothesis": hyp}


def _candidates(hook: str):
    def check(v: Any) -> list[dict]:
        return [_candidate(c, f"{hook}[{i}]")
                for i, c in enumerate(_list(v, hook, MAX_CANDIDATES))]
    return check


def _accept(v: Any) -> str | None:
    if v not in (None, "keep", "discard") or isinstance(v, bool):
        raise SchemaError('accept: must return None, "keep" or "discard"')
    return v


CHECKS = {
    "observe": _observe,
    "context": _context,
    "constraints": _constraints,
    "suggest": _candidates("suggest"),
    "review": _candidates("review"),
    "accept": _accept,
}


def check_output(hook: str, value: Any) -> Any:
    """The normalised output of `hook`, or SchemaError saying what is wrong."""
    # Invariant 3: `value` is what the host's own strict json.loads produced (dict, list, str,
    # int, float, bool, None); these checks only look at types, lengths and keys, and compare
    # numbers the host decoded, never an object made in the sandbox.
    if hook not in CHECKS:
        raise SchemaError(f"unknown hook {hook!r}")
    return CHECKS[hook](value)
