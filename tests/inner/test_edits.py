"""Typed edits: values are literals checked against the space; anything else is refused."""

from __future__ import annotations

import pytest

from bilevel.inner.edits import EditError, Param, apply, parse_value, read_constants, validate

SPACE = {
    "N_LAYER": Param("N_LAYER", "int", 1, 8),
    "LR": Param("LR", "float", 1e-5, 1e-1),
    "TIED": Param("TIED", "bool"),
    "ACT": Param("ACT", "choice", values=("gelu", "relu")),
}
SCRIPT = 'N_LAYER = 2  # blocks\nLR = 3e-3\nTIED = True\nACT = "gelu"\n\nprint(N_LAYER, LR)\n'


def test_valid_edit_writes_a_copy_and_keeps_comments():
    values = validate({"N_LAYER": "4", "LR": 0.01, "TIED": "False", "ACT": "relu"}, SPACE)
    out = apply(SCRIPT, values)
    assert read_constants(out) == {"N_LAYER": 4, "LR": 0.01, "TIED": False, "ACT": "relu"}
    assert "N_LAYER = 4  # blocks\n" in out
    assert out.endswith("print(N_LAYER, LR)\n")
    assert read_constants(SCRIPT)["N_LAYER"] == 2  # the original text is untouched


@pytest.mark.parametrize("text", [
    "__import__('os').system('id')",
    "2; import os",
    "(lambda: 1)()",
    "open('/etc/passwd').read()",
    "4\nimport os",
    "N_LAYER",
    "2 if True else 3",
    "[1, 2]",
])
def test_injection_strings_are_refused(text):
    with pytest.raises(EditError) as err:
        validate({"N_LAYER": text}, SPACE)
    assert "N_LAYER" in str(err.value)


@pytest.mark.parametrize("name,value,why", [
    ("N_LAYER", "2.5", "int"),
    ("N_LAYER", True, "bool"),
    ("N_LAYER", 0, "outside"),
    ("N_LAYER", 9, "outside"),
    ("LR", "'0.01'", "float"),
    ("LR", float("nan"), "finite"),
    ("LR", 1e9, "outside"),
    ("TIED", 1, "bool"),
    ("ACT", "silu", "not one of"),
    ("NOT_A_PARAM", 1, "not a tunable"),
])
def test_wrong_types_and_out_of_range_are_refused(name, value, why):
    with pytest.raises(EditError) as err:
        validate({name: value}, SPACE)
    assert name in str(err.value) and why in str(err.value)


def test_choice_values_cannot_smuggle_code():
    values = validate({"ACT": "relu"}, SPACE)
    out = apply(SCRIPT, values)
    assert 'ACT = \'relu\'' in out
    with pytest.raises(EditError):
        validate({"ACT": "relu'; import os; '"}, SPACE)


def test_parse_value_is_literal_only_and_bounded():
    assert parse_value("X", " 1e-3 ") == 1e-3
    with pytest.raises(EditError):
        parse_value("X", "9" * 200)
    with pytest.raises(EditError):
        parse_value("X", "(" * 90 + ")" * 90)


def test_apply_refuses_unknown_and_ambiguous_constants():
    with pytest.raises(EditError, match="no top-level constant"):
        apply(SCRIPT, {"MISSING": 1})
    with pytest.raises(EditError, match="more than once"):
        apply("A = 1\nA = 2\n", {"A": 3})
    with pytest.raises(EditError, match="spans several lines"):
        apply("A = (1 +\n 2)\n", {"A": 3})
