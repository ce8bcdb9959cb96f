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


def test_strategy_prompt_fences_the_trace():
    from bilevel.outer.strategy import llm_messages
    from bilevel.runtime.llm.parsing import fence

    from fences import assert_fenced, assert_not_fenced

    hist = [{"changes": {"LR": 0.01}, "kept": False, "val_bpb": 2.5, "hypothesis": "CANARY-HYPOTHESIS",
             "status": "ok"}]
    msgs = llm_messages(SearchConfig(active=list(SPACE)), hist, fence)
    assert_fenced(msgs[1]["content"], "CANARY-HYPOTHESIS")
    assert_not_fenced(msgs[1]["content"], "Last trials:")
    assert "CANARY" not in msgs[0]["content"]
