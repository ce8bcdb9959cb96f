"""The reference mechanism plateau_breaker: jumps only on a plateau, away from the most recently moved constant."""

from __future__ import annotations

import pytest

from bilevel.runtime.mechanisms.validation import SPACE

import mechanism_fixtures as fx
from library_fixtures import source, view_with

make_mech = fx.make_mech
mech_client = fx.mech_client


@pytest.mark.docker
def test_plateau_breaker_jumps_only_on_a_plateau(make_mech):
    m = make_mech(source("plateau_breaker"))
    inc = {"LEARNING_RATE": 0.003, "WEIGHT_DECAY": 0.1, "N_LAYER": 2, "N_EMBD": 64,
           "DROPOUT": 0.0, "TIE_EMBEDDINGS": True}
    improving = [{"iteration": i, "changes": {"LEARNING_RATE": 0.003}, "kept": i % 2 == 0}
                 for i in range(6)]
    assert m.call("suggest", view_with(improving, inc)).value == []
    assert m.call("context", view_with(improving, inc)).value == []
    flat = [{"iteration": i, "changes": {"LEARNING_RATE": 0.003 + i * 1e-4}, "kept": False}
            for i in range(5)]
    jumps = m.call("suggest", view_with(flat, inc)).value
    assert len(jumps) == 2
    for cand in jumps:
        ((name, value),) = cand["changes"].items()
        assert name != "LEARNING_RATE"                    # the most recently moved stays
        spec = SPACE[name]
        if spec["type"] == "bool":
            assert value is (not inc[name])
        else:
            assert abs(value - inc[name]) >= 0.25 * (spec["max"] - spec["min"])
    assert "5 trials" in m.call("context", view_with(flat, inc)).value[0]["text"]
