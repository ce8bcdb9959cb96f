"""Level 1.5's strategy: a floor of active constants, and the offline decision from the history."""

from __future__ import annotations

from bilevel.outer.strategy import SearchConfig, apply_decision, offline_decision

from inner_space import SPACE


def test_strategy_keeps_a_floor_of_active_constants():
    cfg = SearchConfig(active=list(SPACE))
    new = apply_decision(cfg, freeze=["LR", "N_LAYER", "TIED", "BOGUS"], unfreeze=[], guidance="g",
                         names=list(SPACE), min_active=2)
    assert len(new.active) == 2 and new.frozen == ["LR"]
    hist = [{"changes": {"TIED": False}, "kept": False}] * 3
    d = offline_decision(SearchConfig(active=list(SPACE)), hist)
    assert d["freeze"] == ["TIED"]
