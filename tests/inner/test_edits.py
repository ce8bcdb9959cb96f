"""Typed edits: values are literals checked against the space; anything else is refused."""

from __future__ import annotations

import pytest

from bilevel.inner import edits
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


@pytest.mark.parametrize("expr, value", [("2**19", 2 ** 19), ("8 * 1024", 8192), ("-(3 - 5) / 4", 0.5),
                                         ("(0.8, 0.95)", (0.8, 0.95)), ("10 * 524288", 5242880)])
def test_constant_expressions_of_literals_are_constants(expr, value):
    assert edits.read_constants(f"X = {expr}\n") == {"X": value}


@pytest.mark.parametrize("expr", ["9**9**9", "2**1000 * 2**1000 * 2**1000", "1 / 0", "len('ab')",
                                  "__import__('os').getcwd()", "Y + 1", "'a' * 10**9"])
def test_other_expressions_are_never_computed(expr):
    # Invariant 2: an AST walk over literals; a call, a name, or a huge power is no constant.
    assert "X" not in edits.read_constants(f"X = {expr}\n")


def test_a_tuple_element_edit_rewrites_the_whole_tuple_as_a_literal():
    src = "BETAS = (0.8, 0.95)  # adam\nN = 2**4\n"
    out = edits.apply(src, {"BETAS[1]": 0.99, "N": 32})
    assert out == "BETAS = (0.8, 0.99)  # adam\nN = 32\n"
    assert edits.read_values(src)["BETAS[0]"] == 0.8
    with pytest.raises(edits.EditError, match="no tuple constant N"):
        edits.apply(src, {"N[0]": 1})


def test_rules_see_the_full_values_with_tuple_elements_folded_in():
    space = edits.Space({}, rules=(edits.Rule("BETAS[0] < BETAS[1]", "beta1 below beta2"),),
                        fixed={"BETAS": (0.8, 0.95)})
    space.check_rules({"BETAS[0]": 0.9})
    with pytest.raises(EditError, match=r"breaks the constraint BETAS\[0\] < BETAS\[1\] .*beta1 below beta2"):
        space.check_rules({"BETAS[0]": 0.97})
    with pytest.raises(EditError, match="cannot be evaluated"):
        edits.Space({}, rules=(edits.Rule("BETAS.count(1)"),), fixed={"BETAS": (1,)}).check_rules({})
