"""The reference mechanism ucb_bandit: tries every arm once, then exploits the best mean gain."""

from __future__ import annotations

import pytest

from bilevel.runtime.mechanisms.validation import SPACE

import mechanism_fixtures as fx
from library_fixtures import record, source, view_with

make_mech = fx.make_mech
mech_client = fx.mech_client


@pytest.mark.docker
def test_ucb_tries_every_arm_then_exploits_the_best(make_mech):
    m = make_mech(source("ucb_bandit"), seed=1)
    view = view_with([])
    arms = list(SPACE)
    picked = []
    for i, name in enumerate(arms):
        out = m.call("suggest", view).value
        (changed,) = out[0]["changes"]
        picked.append(changed)
        gain = 0.2 if name == "N_EMBD" else 0.0
        m.call("observe", record(i, {name: 1}, 2.4 - gain, 2.4, gain > 0))
    assert picked == arms                      # untried arms first, in order
    for _ in range(3):
        (changed,) = m.call("suggest", view).value[0]["changes"]
        assert changed == "N_EMBD"             # then the arm with the best mean gain
    assert "N_EMBD: tried 1x" in m.call("context", view).value[0]["text"]
