"""The inner loop with stand-in mechanisms and trials: constraints are enforced on every
candidate, review and acceptance shape what runs, and effects record what mechanisms did."""

from __future__ import annotations

import pytest

from bilevel.inner.acceptance import noise_floor
from bilevel.inner.loop import LoopState, Step, iterate
from bilevel.inner.proposer import OfflineProposer

from inner_space import INC, SPACE


class StubMechs:
    """Plain-Python stand-ins for sandboxed mechanisms: each maps a hook to a function."""

    def __init__(self, **mechs):
        self.mechs = mechs
        self.calls = []
        self.quarantined = {}

    def call_all(self, hook, *args):
        out = []
        for name, hooks in self.mechs.items():
            if hook in hooks and name not in self.quarantined:
                self.calls.append((name, hook))
                out.append((name, hooks[hook](*args)))
        return out

    def review_chain(self, candidates, view):
        for name, hooks in self.mechs.items():
            if "review" in hooks and name not in self.quarantined:
                self.calls.append((name, "review"))
                out = hooks["review"](candidates, view)
                yield name, out
                if name not in self.quarantined:
                    candidates = out

    def quarantine(self, name, hook, reason):
        self.quarantined[name] = f"{hook}: {reason}"


def _state():
    return LoopState(space=SPACE, incumbent=dict(INC), best=2.0, baseline=2.0, active=list(SPACE))


def _step(mechs, proposal, results):
    it = iter(results)
    return Step(mechs=mechs, propose=lambda s, sec: proposal,
                run_trial=lambda cfg, hyp: {"trial_id": "t", **next(it)},
                offline=OfflineProposer(SPACE, 0))


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


def test_noise_aware_confirms_with_a_repeat():
    state = _state()
    state.noise = 0.1
    step = _step(StubMechs(), {"changes": {"LR": 0.002}, "hypothesis": "x"},
                 [{"status": "ok", "val_bpb": 1.98}, {"status": "ok", "val_bpb": 2.04}])
    step.mode = "noise-aware"
    rec = iterate(state, step)
    assert not rec["kept"] and "not confirmed" in rec["decision"]
    assert noise_floor([2.0, 2.1, 2.05]) == pytest.approx(0.05)


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


def test_a_candidate_equal_to_one_in_flight_is_refused_and_the_view_lists_pending():
    seen = []
    mechs = StubMechs(spy={"suggest": lambda v: seen.append(v["pending"]) or []})
    state = _state()
    running = {**INC, "LR": 0.05}
    state.pending = [{"iteration": 1, "changes": {"LR": 0.05}, "config": running, "hypothesis": "h",
                      "status": "running"}]
    step = _step(mechs, {"changes": {"LR": 0.05}, "hypothesis": "the same as in flight"},
                 [{"status": "ok", "val_bpb": 1.9}])
    step.refuse = lambda config: "in flight" if config == running else None
    rec = iterate(state, step)
    assert seen == [state.pending] and seen[0][0]["status"] == "running"
    assert rec["rejected"][0] == {"source": "proposer", "changes": {"LR": 0.05}, "why": "in flight"}
    assert rec["source"] == "fallback" and {**INC, **rec["changes"]} != running


def test_conclude_decides_against_the_best_at_the_moment_the_trial_ends():
    from bilevel.inner.loop import conclude

    state = _state()
    step = _step(StubMechs(), None, [])
    chosen = {"changes": {"LR": 0.02}, "hypothesis": "h", "source": "proposer"}
    state.best = 1.8   # another slot's trial finished first and set a better best
    rec = conclude(state, step, iteration=3, chosen=chosen, config={**INC, "LR": 0.02},
                   result={"trial_id": 7, "status": "ok", "val_bpb": 1.85}, view=state.view(), effects={},
                   rejected=[])
    assert rec["iteration"] == 3 and rec["best_before"] == 1.8 and not rec["kept"]   # 1.85 beat 2.0, not 1.8


# ---- no mechanism can end or stall a run ---------------------------------------------------

NO_RANGES = {"forbid": [], "ranges": {}}


def test_constraints_that_forbid_everything_quarantine_their_mechanism_and_the_iteration_runs():
    mechs = StubMechs(wall={"constraints": lambda v: {"forbid": sorted(SPACE), "ranges": {}}},
                      fine={"constraints": lambda v: {"forbid": ["TIED"], "ranges": {}}})
    state = _state()
    rec = iterate(state, _step(mechs, {"changes": {"LR": 0.05}, "hypothesis": "x"},
                               [{"status": "ok", "val_bpb": 1.9}]))
    assert list(mechs.quarantined) == ["wall"]            # the innocent one stays
    assert "no admissible candidate" in mechs.quarantined["wall"]
    assert rec["source"] in ("fallback", "proposer") and "TIED" not in rec["changes"]
    assert rec["effects"]["wall"]["quarantined"].startswith("constraints:")
    # The next iteration runs without it: the proposer's candidate is admissible again.
    rec2 = iterate(state, _step(mechs, {"changes": {"LR": 0.05}, "hypothesis": "y"},
                                [{"status": "ok", "val_bpb": 1.8}]))
    assert rec2["source"] == "proposer" and rec2["changes"] == {"LR": 0.05}


def test_an_empty_range_and_disjoint_ranges_do_not_stall_the_loop():
    empty = StubMechs(inverted={"constraints": lambda v: {
        "forbid": ["TIED", "N_LAYER"], "ranges": {"LR": [0.05, 0.01]}}})
    rec = iterate(_state(), _step(empty, {"changes": {"LR": 0.05}, "hypothesis": "x"},
                                  [{"status": "ok", "val_bpb": 1.9}]))
    assert list(empty.quarantined) == ["inverted"] and rec["changes"]
    # Each alone leaves a way; together nothing: the later one goes.
    pair = StubMechs(low={"constraints": lambda v: {"forbid": ["TIED", "N_LAYER"], "ranges": {"LR": [1e-4, 2e-4]}}},
                     high={"constraints": lambda v: {"forbid": [], "ranges": {"LR": [0.05, 0.06]}}})
    rec = iterate(_state(), _step(pair, {"changes": {"LR": 0.5}, "hypothesis": "x"},
                                  [{"status": "ok", "val_bpb": 1.9}]))
    assert list(pair.quarantined) == ["high"] and "with the others'" in pair.quarantined["high"]
    assert 1e-4 <= rec["changes"]["LR"] <= 2e-4           # the remaining constraint still holds


def test_a_narrow_range_is_found_by_the_sweep_not_given_up_on():
    narrow = StubMechs(pin={"constraints": lambda v: {"forbid": ["TIED", "N_LAYER"],
                                                       "ranges": {"LR": [0.0123, 0.0124]}}})
    rec = iterate(_state(), _step(narrow, {"changes": {"LR": 0.5}, "hypothesis": "x"},
                                  [{"status": "ok", "val_bpb": 1.9}]))
    assert not narrow.quarantined and 0.0123 <= rec["changes"]["LR"] <= 0.0124


def test_a_review_that_empties_the_list_is_quarantined_and_its_output_dropped():
    seen = []
    mechs = StubMechs(eraser={"review": lambda cands, v: []},
                      after={"review": lambda cands, v: seen.append(list(cands)) or cands})
    rec = iterate(_state(), _step(mechs, {"changes": {"LR": 0.05}, "hypothesis": "x"},
                                  [{"status": "ok", "val_bpb": 1.9}]))
    assert list(mechs.quarantined) == ["eraser"] and "review" in mechs.quarantined["eraser"]
    assert rec["source"] == "proposer" and rec["changes"] == {"LR": 0.05}
    assert seen and seen[0][0]["changes"] == {"LR": 0.05}  # the next reviewer saw the list before it


def test_everything_frozen_by_the_strategy_still_runs_a_step():
    state = _state()
    state.frozen, state.active = sorted(SPACE), []
    rec = iterate(state, _step(StubMechs(), {"changes": {"LR": 0.05}, "hypothesis": "x"},
                               [{"status": "ok", "val_bpb": 1.9}]))
    assert rec["changes"] and rec["source"] == "fallback"
