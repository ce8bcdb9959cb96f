"""The reference mechanism elite_crossover: recombines elites only, never a config already run."""

from __future__ import annotations

import pytest

import mechanism_fixtures as fx
from library_fixtures import record, source, view_with

make_mech = fx.make_mech
mech_client = fx.mech_client


@pytest.mark.docker
def test_elite_crossover_recombines_elites_only(make_mech):
    m = make_mech(source("elite_crossover"), seed=4)
    base = {"LEARNING_RATE": 0.003, "N_LAYER": 2, "DROPOUT": 0.0, "N_EMBD": 64}
    elites = [dict(base, LEARNING_RATE=0.006, N_LAYER=4), dict(base, DROPOUT=0.1, N_EMBD=128),
              dict(base, N_LAYER=3), dict(base, DROPOUT=0.2)]     # the pool holds 4
    bad = dict(base, LEARNING_RATE=0.02, N_LAYER=6)
    assert m.call("suggest", view_with([], base)).value == []      # fewer than two elites
    scored = [(bad, 3.0)] + [(e, 2.2 + 0.01 * i) for i, e in enumerate(elites)]
    for i, (cfg, bpb) in enumerate(scored):
        m.call("observe", record(i, {}, bpb, 2.4, False, config=cfg))
    m.call("observe", record(9, {}, None, 2.4, False, config=bad, status="crash"))
    m2 = make_mech(source("elite_crossover"), seed=4)
    out = m.call("suggest", view_with([], base)).value
    assert out
    for cand in out:
        for name, value in cand["changes"].items():
            assert value in {e[name] for e in elites} and value != base[name]
    assert m2.call("suggest", view_with([], base)).value == []
    # Two elites only, each one change from the incumbent: every child is a config already run.
    m3 = make_mech(source("elite_crossover"), seed=4)
    for i, cfg in enumerate([dict(base, N_LAYER=3), dict(base, DROPOUT=0.2)]):
        m3.call("observe", record(i, {}, 2.3, 2.4, False, config=cfg))
    m3.call("observe", record(2, {}, 2.3, 2.4, False, config=dict(base, N_LAYER=3, DROPOUT=0.2)))
    assert m3.call("suggest", view_with([], base)).value == []
