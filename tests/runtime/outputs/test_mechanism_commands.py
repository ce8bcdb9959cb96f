"""`bilevel mechanism check`: a mechanism accepted with its outputs and timings, or rejected at its stage."""

from __future__ import annotations

import json

import pytest

from bilevel.runtime.outputs import mechanism_commands as mechanism_cli

import mechanism_fixtures as fx
from mechanism_fixtures import COUNTER

# Shared fixtures, imported explicitly (conftest.py belongs to the lead).
mech_client = fx.mech_client


@pytest.mark.docker
def test_check_command(tmp_path, capsys, mech_client):
    good = tmp_path / "good.py"
    good.write_text(COUNTER)
    assert mechanism_cli.check_command(str(good), None, True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] and out["outputs"]["context"] == [{"title": "count", "text": "10"}]
    assert set(out["timings_ms"]) >= {"ast", "start_compile_load", "smoke", "total"}
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nclass Mechanism:\n    pass\n")
    assert mechanism_cli.check_command(str(bad), None, False) == 1
    text = capsys.readouterr().out
    assert "rejected at stage ast" in text and "import of 'os'" in text
