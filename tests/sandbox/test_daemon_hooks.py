"""The in-container daemon keeps its own copy of the hook names (it cannot import the host's);
this keeps the two equal. The daemon is read as text and parsed, never imported or run on the
host (importing it would re-exec the interpreter)."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

from bilevel.runtime.mechanisms.schema import HOOKS

DAEMON = Path(str(resources.files("bilevel.sandbox").joinpath("images", "mechanism", "daemon.py")))


def daemon_hooks() -> tuple:
    tree = ast.parse(DAEMON.read_text(), str(DAEMON))
    values = [node.value for node in tree.body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "HOOKS" for t in node.targets)]
    assert len(values) == 1, "the daemon must bind HOOKS exactly once, at module level"
    return ast.literal_eval(values[0])


def test_daemon_hooks_equal_the_hosts():
    hooks = daemon_hooks()
    assert isinstance(hooks, tuple)
    assert hooks == HOOKS
