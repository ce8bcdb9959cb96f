"""Inner-loop logic with stand-in mechanisms and trials: constraints are enforced on every
candidate, acceptance follows its documented rule, and effects record what mechanisms did."""

from __future__ import annotations

import pytest

from bilevel.inner.acceptance import decide, noise_floor
from bilevel.inner.candidates import check_candidate, merge_constraints
from bilevel.inner.edits import Param
from bilevel.inner.loop import LoopState, Step, iterate
from bilevel.inner.proposer import OfflineProposer, extend, perturb
from bilevel.outer.strategy import SearchConfig, apply_decision, offline_decision

SPACE = {
    "LR": Param("LR", "float", 1e-4, 1e-1),
    "N_LAYER": Param("N_LAYER", "int", 1, 6),
    "TIED": Param("TIED", "bool"),
}
INC = {"LR": 1e-3, "N_LAYER": 2, "TIED": True}


class StubMechs:
    """Plain-Python stand-ins for sandboxed mechanisms: each maps a hook to a function."""

    def __init__(self, **mechs):
        self.mechs = mechs
        self.calls = []

    def call_all(self, hook, *args):
        out = []
        for name, hooks in self.mechs.items():
            if hook in hooks:
                self.calls.append((name, hook))
                out.append((name, hooks[hook](*args)))
        return out

    def review_chain(self, candidates, view):
        for name, hooks in self.mechs.items():
            if "review" in hooks:
                self.calls.append((name, "review"))
                candidates = hooks["review"](candidates, view)
                yield name, candidates


def _state():
    return LoopState(space=SPACE, incumbent=dict(INC), best=2.0, baseline=2.0, active=list(SPACE))


def _step(mechs, proposal, results):
    it = iter(results)
    return Step(mechs=mechs, propose=lambda s, sec: proposal,
                run_trial=lambda cfg, hyp: {"trial_id": "t", **next(it)},
                offline=OfflineProposer(SPACE, 0))


def test_forbidden_constant_is_refused_whoever_proposes():
    merged = merge_constraints([("tabu", {"forbid": ["LR"], "ranges": {}})])
    values, why = check_candidate({"changes": {"LR": 0.01}}, SPACE, INC, [], merged)
    assert values is None and "forbidden by mechanism tabu" in why


def test_ranges_intersect_and_bind():
    merged = merge_constraints([("a", {"forbid": [], "ranges": {"LR": [1e-4, 0.05]}}),
                                ("b", {"forbid": [], "ranges": {"LR": [0.002, 0.1]}})])
    assert merged["ranges"]["LR"][:2] == (0.002, 0.05)
    assert check_candidate({"changes": {"LR": 0.001}}, SPACE, INC, [], merged)[0] is None
    assert check_candidate({"changes": {"LR": 0.01}}, SPACE, INC, [], merged)[0] == {"LR": 0.01}


def test_frozen_and_noop_candidates_are_refused():
    merged = merge_constraints([])
    assert "frozen" in check_candidate({"changes": {"LR": 0.01}}, SPACE, INC, ["LR"], merged)[1]
    assert "identical" in check_candidate({"changes": {"LR": 1e-3}}, SPACE, INC, [], merged)[1]
    assert "invalid" in check_candidate({"changes": {"LR": "os.system"}}, SPACE, INC, [], merged)[1]


def test_loop_enforces_constraints_on_the_proposer_and_records_effects():
    mechs = StubMechs(tabu={"constraints": lambda v: {"forbid": ["LR"], "ranges": {}},
                            "observe": lambda r: None})
    state = _state()
    step = _step(mechs, {"changes": {"LR": 0.05}, "hypothesis": "bigger lr"},
                 [{"status": "ok", "val_bpb": 1.9}])
    rec = iterate(state, step)
    assert "LR" not in rec["changes"] and rec["source"] == "fallback"
    assert rec["rejected"][0]["why"].startswith("LR is forbidden")
    assert rec["effects"]["tabu"]["constraints"]["forbid"] == ["LR"]
    assert ("tabu", "observe") in mechs.calls and rec["kept"] and state.best == 1.9


def test_review_can_replace_a_proposal_and_it_is_recorded():
    mechs = StubMechs(fixer={"review": lambda cands, v: [{"changes": {"N_LAYER": 3}, "hypothesis": "deeper"}]})
    state = _state()
    rec = iterate(state, _step(mechs, {"changes": {"LR": 0.05}, "hypothesis": "x"},
                               [{"status": "ok", "val_bpb": 2.5}]))
    assert rec["changes"] == {"N_LAYER": 3}
    assert rec["effects"]["fixer"]["reviewed"] == {"in": 1, "out": 1}
    assert not rec["kept"] and state.incumbent == INC


def test_acceptance_rule():
    kw = dict(best=2.0, noise=0.05, votes=[])
    assert decide(mode="strict", status="ok", val_bpb=1.99, **kw)[0] == "keep"
    assert decide(mode="noise-aware", status="ok", val_bpb=1.99, **kw)[0] == "confirm"
    assert decide(mode="noise-aware", status="ok", val_bpb=1.90, **kw)[0] == "keep"
    assert decide(mode="strict", status="crash", val_bpb=None, **kw)[0] == "discard"
    veto = dict(best=2.0, noise=0.0, votes=[("m", "discard")])
    assert decide(mode="strict", status="ok", val_bpb=1.5, **veto)[0] == "discard"
    push = dict(best=2.0, noise=0.0, votes=[("m", "keep")])
    assert decide(mode="strict", status="ok", val_bpb=2.005, **push)[0] == "keep"
    assert decide(mode="strict", status="ok", val_bpb=2.5, **push)[0] == "discard"
    assert decide(mode="strict", status="timeout", val_bpb=None, **push)[0] == "discard"


def test_noise_aware_confirms_with_a_repeat():
    state = _state()
    state.noise = 0.1
    step = _step(StubMechs(), {"changes": {"LR": 0.002}, "hypothesis": "x"},
                 [{"status": "ok", "val_bpb": 1.98}, {"status": "ok", "val_bpb": 2.04}])
    step.mode = "noise-aware"
    rec = iterate(state, step)
    assert not rec["kept"] and "not confirmed" in rec["decision"]
    assert noise_floor([2.0, 2.1, 2.05]) == pytest.approx(0.05)


def test_offline_proposer_stays_in_space_and_is_seeded():
    a = [OfflineProposer(SPACE, 7).propose(INC, list(SPACE)) for _ in range(3)]
    b = [OfflineProposer(SPACE, 7).propose(INC, list(SPACE)) for _ in range(3)]
    assert a == b
    import random
    rng = random.Random(1)
    for _ in range(200):
        v = perturb(SPACE["LR"], 1e-3, rng, 3.0)
        assert 1e-4 <= v <= 1e-1
        n = perturb(SPACE["N_LAYER"], 6, rng)
        assert 1 <= n <= 6


def test_strategy_keeps_a_floor_of_active_constants():
    cfg = SearchConfig(active=list(SPACE))
    new = apply_decision(cfg, freeze=["LR", "N_LAYER", "TIED", "BOGUS"], unfreeze=[], guidance="g",
                         names=list(SPACE), min_active=2)
    assert len(new.active) == 2 and new.frozen == ["LR"]
    hist = [{"changes": {"TIED": False}, "kept": False}] * 3
    d = offline_decision(SearchConfig(active=list(SPACE)), hist)
    assert d["freeze"] == ["TIED"]


def test_reviewers_get_only_valid_contract_shaped_candidates():
    seen = []

    def review(cands, view):
        seen.extend(cands)
        return cands

    mechs = StubMechs(echo={"review": review})
    proposal = {"changes": {"LR": 0.05}, "hypothesis": 42, "extra": "x"}
    bad = {"changes": {"LR": "nope"}, "hypothesis": "bad"}
    mechs.mechs["sugg"] = {"suggest": lambda v: [bad]}
    rec = iterate(_state(), _step(mechs, proposal, [{"status": "ok", "val_bpb": 2.5}]))
    assert seen == [{"changes": {"LR": 0.05}, "hypothesis": "42"}]       # no source, no extras, no invalid
    assert rec["source"] == "proposer" and rec["rejected"][0]["source"] == "sugg"


def test_offline_proposer_follows_through_a_kept_change_and_stops_after_a_failed_one():
    p = OfflineProposer(SPACE, 3)
    first = p.propose(INC, ["LR"])
    lr = first["changes"]["LR"]
    kept = {**INC, "LR": lr}
    second = p.propose(kept, ["LR"])                      # kept: one more step the same way
    assert second["hypothesis"].startswith("offline perturbation (follow-through)")
    ratio = lr / INC["LR"]
    assert second["changes"]["LR"] == pytest.approx(min(1e-1, max(1e-4, lr * ratio)), rel=1e-2)
    third = p.propose(kept, ["LR"])                       # the follow-through was not kept
    assert "follow-through" not in third["hypothesis"]
    assert extend(SPACE["N_LAYER"], 2, 3) == 4 and extend(SPACE["N_LAYER"], 5, 6) == 6
    assert extend(SPACE["LR"], 1e-3, 2e-3) == pytest.approx(4e-3)


def test_offline_proposer_touches_every_constant_before_any_twice():
    space = {f"P{i}": Param(f"P{i}", "float", 1e-4, 1.0) for i in range(8)}
    inc = {n: 0.01 for n in space}
    p, history = OfflineProposer(space, 5), []
    for _ in range(8):
        history.append({"changes": p.propose(inc, list(space), history)["changes"]})
    counts = [sum(n in h["changes"] for h in history) for n in space]
    assert min(counts) >= 1 and max(counts) - min(counts) <= 1
