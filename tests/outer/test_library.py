"""The five reference mechanisms as a package: each passes `mechanism check`, and the package
imports none of them. Each one's behaviour is tested in tests/outer/library/test_<name>.py."""

from __future__ import annotations

import json

import pytest

from bilevel.runtime.outputs import mechanism_commands as mechanism_cli

import mechanism_fixtures as fx
from mechanism_fixtures import LIBRARY

mech_client = fx.mech_client


NAMES = ["tabu", "ucb_bandit", "doe", "elite_crossover", "plateau_breaker"]


@pytest.mark.docker
@pytest.mark.parametrize("name", NAMES)
def test_library_mechanism_is_accepted(name, capsys, mech_client):
    assert mechanism_cli.check_command(str(LIBRARY / f"{name}.py"), None, True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] and out["stage"] == "accepted" and out["hooks"]


def test_library_package_imports_no_mechanism():
    init = (LIBRARY / "__init__.py").read_text()
    assert not any(f"import {n}" in init or f".{n}" in init for n in NAMES)
