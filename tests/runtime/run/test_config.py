"""Resume config rules: which changed settings a resume refuses, by name."""

from __future__ import annotations

from bilevel.runtime.run.config import diff_config


def test_diff_config_names_refused_changes():
    old = {"task": "tinygpt", "hours": 8, "max_usd": 5.0, "max_tokens": None,
           "budget": {"trial_s": 300, "hours": 2}, "deadline": "2026-01-01T08:00:00+00:00"}
    assert diff_config(old, dict(old)) == []
    raised = {**old, "hours": 10, "max_usd": 7.5, "deadline": "2026-01-01T10:00:00+00:00",
              "budget": {"trial_s": 300, "hours": 3}}
    assert diff_config(old, raised) == []
    lowered = {**old, "hours": 4, "max_usd": 1.0, "budget": {"trial_s": 300, "hours": 1},
               "deadline": "2025-12-31T00:00:00+00:00"}
    assert diff_config(old, lowered) == ["budget.hours", "deadline", "hours", "max_usd"]
    # None is unlimited: setting a limit on an unlimited setting is a decrease.
    assert diff_config(old, {**old, "max_tokens": 1000}) == ["max_tokens"]
    assert diff_config({**old, "max_tokens": 10}, old) == []
    assert diff_config(old, {**old, "task": "karpathy", "budget": {"trial_s": 60, "hours": 2}}) == [
        "budget.trial_s", "task"]
    assert diff_config(old, {**old, "levels": "1,2"}) == ["levels"]  # added keys count
    assert diff_config(old, {**old, "hours": True}) == ["hours"]  # a bool is not a number
    assert diff_config(old, {**old, "task": "x"}, allowed={"task"}) == []
    assert diff_config(old, {**old, "hours": 10}, allowed={"task"}) == ["hours"]


def test_endpoint_settings_are_stored_only_when_set_and_may_change_on_resume():
    import pytest

    from bilevel.runtime.run.config import RunConfig, parse_endpoint

    plain = RunConfig()
    assert "llm_fallback" not in plain.to_dict() and "llm_context" not in plain.to_dict()
    chained = RunConfig(llm_fallback=["small@http://127.0.0.1:8080/v1"], llm_context=4096)
    assert chained.identity() == plain.identity()          # the same run folder: they are not the run
    assert diff_config(plain.to_dict(), chained.to_dict()) == []
    assert parse_endpoint("small@http://127.0.0.1:8080/v1") == ("small", "http://127.0.0.1:8080/v1")
    for bad in ("small", "@http://x", "small@ftp://x", "small@"):
        with pytest.raises(ValueError, match="MODEL@URL"):
            RunConfig(llm_fallback=[bad]).validate()
    with pytest.raises(ValueError, match="--llm-context"):
        RunConfig(llm_context=100).validate()
