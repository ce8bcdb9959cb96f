"""The reference mechanism tabu: drops repeated moves and forbids the parameters that keep failing."""

from __future__ import annotations

import pytest

import mechanism_fixtures as fx
from library_fixtures import record, source, view_with

make_mech = fx.make_mech
mech_client = fx.mech_client


@pytest.mark.docker
def test_tabu_drops_repeated_moves_and_forbids_failing_parameters(make_mech):
    m = make_mech(source("tabu"))
    m.call("observe", record(1, {"N_LAYER": 3}, 2.5, 2.4, False))
    m.call("observe", record(2, {"N_LAYER": 4}, 2.5, 2.4, False))
    m.call("observe", record(3, {"LEARNING_RATE": 0.004}, 2.3, 2.4, True))
    view = view_with([])
    cands = [{"changes": {"N_LAYER": 3}, "hypothesis": "repeat"},
             {"changes": {"LEARNING_RATE": 0.004000000001}, "hypothesis": "same lr"},
             {"changes": {"LEARNING_RATE": 0.006}, "hypothesis": "new lr"},
             {"changes": {"N_LAYER": 5, "DROPOUT": 0.1}, "hypothesis": "new"}]
    kept = m.call("review", cands, view).value
    assert [c["hypothesis"] for c in kept] == ["new lr", "new"]
    assert m.call("constraints", view).value == {"forbid": ["N_LAYER"], "ranges": {}}
    assert "N_LAYER = 3" in m.call("context", view).value[0]["text"]
