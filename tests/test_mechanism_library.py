"""The five reference mechanisms: each passes `mechanism check`, and each changes the
proposals the way its docstring claims. They run only in the sandbox; this file reads them
as text (trusted code never imports generated or library mechanisms)."""

from __future__ import annotations

import json
import math

import pytest

from bilevel.runtime.mechanisms.validation import SPACE, synthetic_trace
from bilevel.runtime.outputs import mechanism_commands as mechanism_cli
from tests import mechanism_fixtures as fx
from tests.mechanism_fixtures import LIBRARY

make_mech = fx.make_mech
mech_client = fx.mech_client
NAMES = ["tabu", "ucb_bandit", "doe", "elite_crossover", "plateau_breaker"]


def source(name: str) -> str:
    return (LIBRARY / f"{name}.py").read_text()


def record(i, changes, bpb, best_before, kept, config=None, status="ok"):
    return {"iteration": i, "changes": changes, "config": config or dict(changes),
            "val_bpb": bpb, "best_before": best_before, "status": status,
            "hypothesis": "h", "kept": kept}


def view_with(history, incumbent=None, frozen=()):
    _r, view = synthetic_trace(2)
    view["history"] = history
    view["frozen"] = list(frozen)
    if incumbent is not None:
        view["incumbent"] = incumbent
    return view


@pytest.mark.docker
@pytest.mark.parametrize("name", NAMES)
def test_library_mechanism_is_accepted(name, capsys, mech_client):
    assert mechanism_cli.check_command(str(LIBRARY / f"{name}.py"), None, True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] and out["stage"] == "accepted" and out["hooks"]


def test_library_package_imports_no_mechanism():
    init = (LIBRARY / "__init__.py").read_text()
    assert not any(f"import {n}" in init or f".{n}" in init for n in NAMES)


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


@pytest.mark.docker
def test_doe_covers_every_stratum_once(make_mech):
    m = make_mech(source("doe"), seed=2)
    view = view_with([])
    points = [m.call("suggest", view).value[0]["changes"] for _ in range(8)]
    assert m.call("suggest", view).value == []            # the design is exhausted
    for name in ["LEARNING_RATE", "WEIGHT_DECAY", "N_EMBD"]:
        lo, hi = SPACE[name]["min"], SPACE[name]["max"]
        if name == "LEARNING_RATE":                       # log-spaced: spans 3 decades
            pos = [math.log(p[name] / lo) / math.log(hi / lo) for p in points]
        else:
            pos = [(p[name] - lo) / (hi - lo) for p in points]
        strata = sorted(min(int(u * 8), 7) for u in pos)
        assert strata == list(range(8)), (name, strata)


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
