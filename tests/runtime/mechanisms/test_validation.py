"""Stage 1 of the validation pipeline, the host-side AST policy (parse only), as `validation`
exposes it to `mechanism check`."""

from __future__ import annotations

import pytest

from bilevel.runtime.mechanisms.validation import PolicyViolation, check_source

from mechanism_fixtures import mech_policy


@pytest.mark.parametrize("source,why", [
    ("x = 1\n", "exactly one"),
    ("class Mechanism:\n    pass\nclass Mechanism:\n    pass\n", "exactly one"),
    ("import os\nclass Mechanism:\n    pass\n", "import of 'os'"),
    ("class Mechanism:\n    def __eq__(self, o):\n        return True\n", "__eq__"),
    ("class Mechanism:\n    def f(self):\n        return ().__class__\n", "__class__"),
    ("class Mechanism:\n    def f(self):\n        return type(1)\n", '"type"'),
    ("class Mechanism:\n    async def f(self):\n        pass\n", "async"),
    ("class Mechanism:\n    x = " + "(" * 100 + "1" + ")" * 100 + "\n", "nested"),
    ("class Mechanism:\n    x = " + "-" * 5000 + "1\n", "deep"),
])
def test_ast_policy_refuses(source, why):
    with pytest.raises(PolicyViolation) as exc:
        check_source(source, mech_policy())
    assert why in str(exc.value)


def test_ast_policy_allows_init_and_facades():
    check_source("import math\nfrom random import choice\nclass Mechanism:\n"
                 "    def __init__(self):\n        self.n = 0\n", mech_policy())
