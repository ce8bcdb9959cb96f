"""Stage 1 of mechanism validation (host side, parse only): one test per rule family.

Each refusal is checked by its exact message, so a rule that stops firing, or fires with other
wording, fails here; the red-team suite relies on the same wording.
"""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest

from bilevel.runtime.mechanisms.ast_policy import (
    BLOCKED_ATTRS,
    FORBIDDEN_NAMES,
    FORBIDDEN_NODES,
    MAX_AST_DEPTH,
    MAX_BRACKET_DEPTH,
    MAX_NODES,
    PolicyChecker,
    PolicyViolation,
    check_source,
)
from bilevel.runtime.policy import load

POLICY = load(None)
FACADES = sorted(POLICY.mechanism["facades"])
LIBRARY = Path(str(resources.files("bilevel.outer").joinpath("library")))
CLEAN = "class Mechanism:\n    def __init__(self):\n        self.n = 0\n"


def refusal(source: str) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as exc:
        check_source(source, POLICY)
    return exc.value


def refused_as(source: str, message: str) -> None:
    """The source is refused at stage "ast" with exactly `message`."""
    exc = refusal(source)
    assert (exc.stage, str(exc)) == ("ast", message)


def in_method(*body: str) -> str:
    """A Mechanism whose method `f` (lines 3 on) holds `body`."""
    return "class Mechanism:\n    def f(self):\n" + "".join(f"        {line}\n" for line in body)


# -- forbidden node kinds --------------------------------------------------------------------

FORBIDDEN_SAMPLES = {
    ast.AsyncFunctionDef: ("class Mechanism:\n    async def f(self):\n        pass\n", 2),
    ast.AsyncFor: (in_method("async for a in b:", "    pass"), 3),
    ast.AsyncWith: (in_method("async with a:", "    pass"), 3),
    ast.Await: (in_method("await a"), 3),
    ast.Global: (in_method("global g"), 3),
    ast.Nonlocal: (in_method("def g():", "    nonlocal a"), 4),
    ast.Match: (in_method("match a:", "    case 1:", "        pass"), 3),
    ast.TryStar: (in_method("try:", "    pass", "except* ValueError:", "    pass"), 3),
}


def test_every_forbidden_kind_has_a_sample_and_a_visitor():
    assert set(FORBIDDEN_SAMPLES) == set(FORBIDDEN_NODES)
    for kind in FORBIDDEN_NODES:
        assert callable(getattr(PolicyChecker, f"visit_{kind.__name__}", None)), kind


@pytest.mark.parametrize("kind", list(FORBIDDEN_SAMPLES), ids=lambda k: k.__name__)
def test_forbidden_node_kinds(kind):
    source, line = FORBIDDEN_SAMPLES[kind]
    refused_as(source, f"line {line}: {FORBIDDEN_NODES[kind]} are not allowed")


# -- names that start with "_" ---------------------------------------------------------------

@pytest.mark.parametrize("source,message", [
    (in_method("return _x"), 'line 3: name "_x" starts with "_"'),
    (in_method("__x = 1"), 'line 3: name "__x" starts with "_"'),
    ("class Mechanism:\n    def _f(self):\n        pass\n",
     'line 2: function "_f": only __init__ may start with "_"'),
    ("class Mechanism:\n    def __eq__(self, o):\n        return True\n",
     'line 2: function "__eq__": only __init__ may start with "_"'),
    ("def __init__(self):\n    pass\n" + CLEAN,
     'line 1: function "__init__": only __init__ may start with "_"'),
    (in_method("def __init__():", "    pass"),
     'line 3: function "__init__": only __init__ may start with "_"'),
    ("class Mechanism:\n    def f(self, _a):\n        pass\n", 'line 2: parameter "_a" starts with "_"'),
    ("class Mechanism:\n    def f(self, *, _k):\n        pass\n", 'line 2: parameter "_k" starts with "_"'),
    ("class Mechanism:\n    def f(self, *_v):\n        pass\n", 'line 2: parameter "_v" starts with "_"'),
    ("class Mechanism:\n    def f(self, **_w):\n        pass\n", 'line 2: parameter "_w" starts with "_"'),
    (in_method("return lambda _y: 1"), 'line 3: parameter "_y" starts with "_"'),
    (in_method("return dict(_k=1)"), 'line 3: keyword "_k" starts with "_"'),
    (in_method("try:", "    pass", "except ValueError as _e:", "    pass"), 'line 5: name "_e" starts with "_"'),
    ("class _K:\n    pass\n" + CLEAN, 'line 1: class name "_K" starts with "_"'),
    (in_method("return self._n"), 'line 3: attribute "_n" is not allowed'),
    (in_method("return self._"), 'line 3: attribute "_" is not allowed'),
])
def test_underscore_names(source, message):
    refused_as(source, message)


def test_init_in_a_class_and_a_bare_underscore_are_allowed():
    source = CLEAN + "    def f(self, _):\n        for _ in range(3):\n            _ = 1\n"
    assert isinstance(check_source(source, POLICY), ast.Module)


# -- forbidden builtins ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FORBIDDEN_NAMES))
def test_forbidden_builtins(name):
    refused_as(in_method(f"return {name}"), f'line 3: "{name}" is not available in the sandbox')


# -- blocked attributes ----------------------------------------------------------------------

@pytest.mark.parametrize("attr", sorted(BLOCKED_ATTRS | {"__class__", "__globals__"}))
def test_blocked_attributes(attr):
    refused_as(in_method(f"return self.{attr}"), f'line 3: attribute "{attr}" is not allowed')


def test_an_ordinary_attribute_is_allowed():
    check_source(in_method("return self.format, self.n"), POLICY)


# -- imports ---------------------------------------------------------------------------------

@pytest.mark.parametrize("source,module", [
    ("import os\n" + CLEAN, "os"),
    ("import math, socket\n" + CLEAN, "socket"),
    ("from os import path\n" + CLEAN, "os"),
    ("import statistics.sys\n" + CLEAN, "statistics.sys"),
])
def test_imports_outside_the_facades(source, module):
    refused_as(source, f"line 1: import of {module!r} is not allowed (facades: {FACADES})")


def test_imports_of_the_facades_are_allowed():
    check_source("import math\nfrom random import choice\nimport heapq as hq\n" + CLEAN, POLICY)


def test_relative_imports():
    refused_as("from .math import sqrt\n" + CLEAN, "line 1: relative imports are not allowed")
    # `from . import x` names no module, which is also outside the facades.
    refused_as("from . import x\n" + CLEAN, "line 1: relative imports are not allowed (and 1 more)")


def test_star_imports():
    refused_as("from math import *\n" + CLEAN, 'line 1: import of "*" is not allowed')


@pytest.mark.parametrize("line", ["from math import _x", "from math import sqrt as _s", "import math as _m"])
def test_underscore_import_names(line):
    name = "_x" if "_x" in line else line.split()[-3]
    refused_as(line + "\n" + CLEAN, f'line 1: import of "{name}" is not allowed')


# -- the Mechanism class ---------------------------------------------------------------------

def test_class_keywords():
    refused_as("class Mechanism(metaclass=M):\n    pass\n",
               "line 1: class keywords (metaclass=...) are not allowed")
    refused_as("class K(flag=1):\n    pass\n" + CLEAN,
               "line 1: class keywords (metaclass=...) are not allowed")


def test_exactly_one_top_level_mechanism():
    refused_as("x = 1\n", "the source must define exactly one top-level class Mechanism (found 0)")
    refused_as(CLEAN + CLEAN, "the source must define exactly one top-level class Mechanism (found 2)")


def test_a_second_mechanism_class():
    refused_as("class Mechanism:\n    class Mechanism:\n        pass\n", "line 2: a second class Mechanism")
    refused_as(CLEAN + "def make():\n    class Mechanism:\n        pass\n",
               "line 5: a second class Mechanism")


@pytest.mark.parametrize("source,line", [
    (CLEAN + "Mechanism = 1\n", 4),
    (CLEAN + "del Mechanism\n", 4),
    (in_method("Mechanism = self"), 3),
    (in_method("for Mechanism in []:", "    pass"), 3),
])
def test_rebinding_mechanism(source, line):
    refused_as(source, f"line {line}: rebinding Mechanism")


def test_reading_mechanism_is_allowed():
    check_source(in_method("return Mechanism"), POLICY)


# -- size and shape --------------------------------------------------------------------------

def test_size_cap_is_stage_size():
    cap = int(POLICY.mechanism["max_source_kb"]) * 1024
    at_cap = CLEAN + "#" * (cap - len(CLEAN) - 1) + "\n"
    assert len(at_cap.encode()) == cap
    check_source(at_cap, POLICY)
    exc = refusal(at_cap + "\n")
    assert (exc.stage, str(exc)) == ("size", f"source is {cap + 1} bytes, over the cap of {cap}")


def test_size_counts_utf8_bytes():
    cap = int(POLICY.mechanism["max_source_kb"]) * 1024
    source = CLEAN + "# " + "é" * (cap // 2) + "\n"
    assert len(source) < cap < len(source.encode())
    assert refusal(source).stage == "size"


def test_bracket_depth():
    deep = MAX_BRACKET_DEPTH + 1
    refused_as("class Mechanism:\n    x = " + "(" * deep + "1" + ")" * deep + "\n",
               f"brackets nested deeper than {MAX_BRACKET_DEPTH}")
    ok = MAX_BRACKET_DEPTH
    check_source("class Mechanism:\n    x = " + "(" * ok + "1" + ")" * ok + "\n", POLICY)


def test_syntax_tree_depth_and_size():
    refused_as("class Mechanism:\n    x = " + "-" * (MAX_AST_DEPTH * 2) + "1\n",
               f"syntax tree deeper than {MAX_AST_DEPTH}")
    refused_as("class Mechanism:\n    x = [" + "a," * (MAX_NODES // 2) + "]\n",
               f"syntax tree larger than {MAX_NODES} nodes")


def test_invalid_python():
    assert str(refusal("class Mechanism:\n    def f(:\n")).startswith("not valid Python: ")


# -- collecting: the first violation in source order, and how many more -----------------------

def test_three_violations_report_the_first_in_source_order():
    # Source order differs from both walking orders: breadth-first meets the shallow
    # `import os` (line 5) first, and the visitor reaches a function's body (the eval on
    # line 4) before its decorators (line 2).
    source = "class Mechanism:\n    @_wrap\n    def f(self):\n        return eval(1)\nimport os\n"
    refused_as(source, 'line 2: name "_wrap" starts with "_" (and 2 more)')


def test_violations_on_one_line_are_ordered_by_column():
    # The visitor meets the test `_c` before the body `eval`; the column decides.
    refused_as(in_method("return eval if _c else 1"),
               'line 3: "eval" is not available in the sandbox (and 1 more)')


def test_one_node_can_break_several_rules():
    refused_as("from . import _x\n" + CLEAN, "line 1: relative imports are not allowed (and 2 more)")


# -- the library mechanisms are clean --------------------------------------------------------

LIBRARY_FILES = sorted(p for p in LIBRARY.glob("*.py") if p.name != "__init__.py")


def test_the_library_is_there():
    assert len(LIBRARY_FILES) >= 5


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: p.stem)
def test_library_mechanisms_pass(path):
    source = path.read_text()
    tree = check_source(source, POLICY)
    assert isinstance(tree, ast.Module)
    assert ast.dump(tree) == ast.dump(ast.parse(source))
