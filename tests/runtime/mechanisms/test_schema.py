"""The output schema of each mechanism hook: what a hook may return, and what is refused."""

from __future__ import annotations

import pytest

from bilevel.runtime.mechanisms.schema import SchemaError, check_output


@pytest.mark.parametrize("hook,value", [
    ("observe", None),
    ("context", [{"title": "t", "text": "x"}]),
    ("constraints", {"forbid": ["N_LAYER"], "ranges": {"LR": [0.001, 0.01]}}),
    ("constraints", {}),
    ("suggest", [{"changes": {"LR": 0.01, "TIED": True, "ACT": "gelu"}, "hypothesis": "h"}]),
    ("review", []),
    ("accept", "keep"), ("accept", "discard"), ("accept", None),
])
def test_schema_accepts(hook, value):
    check_output(hook, value)


@pytest.mark.parametrize("hook,value", [
    ("observe", 1),
    ("context", [{"title": "t"}]),
    ("context", [{"title": "t", "text": "x" * 5000}]),
    ("context", [{"title": "t", "text": "x", "extra": 1}]),
    ("constraints", {"forbid": "N_LAYER"}),
    ("constraints", {"ranges": {"LR": [2, 1]}}),
    ("constraints", {"ranges": {"LR": [True, 2]}}),
    ("suggest", [{"changes": {}}]),
    ("suggest", [{"changes": {"LR": [1, 2]}}]),
    ("suggest", [{"hypothesis": "no changes"}]),
    ("suggest", {"changes": {"LR": 1}}),
    ("review", [{"changes": {"LR": 1}}] * 40),
    ("accept", "maybe"), ("accept", True),
])
def test_schema_rejects(hook, value):
    with pytest.raises(SchemaError):
        check_output(hook, value)
