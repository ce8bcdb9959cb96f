"""Candidates: constraints from mechanisms merge and bind; frozen, no-op and invalid ones are refused."""

from __future__ import annotations

from bilevel.inner.candidates import check_candidate, merge_constraints

from inner_space import INC, SPACE


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
