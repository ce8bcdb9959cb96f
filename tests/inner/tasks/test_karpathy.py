"""The karpathy/autoresearch task adapter on a FAKE checkout, without the daemon: the space it
infers, and the checkout problems it refuses before anything runs."""

from __future__ import annotations

import pytest

from bilevel.inner.edits import EditError
from bilevel.inner.tasks import karpathy, resolve

from karpathy_checkout import checkout_fixture  # noqa: F401 - the `checkout` fixture


def test_space_is_inferred_from_literal_upper_case_constants(checkout):
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"])
    s = task.space
    assert sorted(s) == ["ASPECT_RATIO", "DEPTH", "EMBEDDING_LR", "OFFSET", "USE_VE", "WARMUP_RATIO",
                         "WINDOW_PATTERN"]          # not 2**19, the tuple, the multi-line one, lower case
    assert (s["ASPECT_RATIO"].type, s["ASPECT_RATIO"].min, s["ASPECT_RATIO"].max) == ("int", 16, 256)
    assert (s["DEPTH"].type, s["DEPTH"].min, s["DEPTH"].max) == ("int", 2, 32)
    assert (s["OFFSET"].type, s["OFFSET"].min, s["OFFSET"].max) == ("int", -32, -2)
    assert (s["EMBEDDING_LR"].type, s["EMBEDDING_LR"].min, s["EMBEDDING_LR"].max) == ("float", 0.06, 6.0)
    assert (s["WARMUP_RATIO"].type, s["WARMUP_RATIO"].min, s["WARMUP_RATIO"].max) == ("float", 0.0, 1.0)
    assert s["USE_VE"].type == "bool"
    assert s["WINDOW_PATTERN"].type == "choice" and s["WINDOW_PATTERN"].values == ("SSSL",)
    assert s["DEPTH"].doc == "transformer layers"
    assert task.defaults()["DEPTH"] == 8 and task.defaults_budget() == 1.0
    # The script has no TIME_BUDGET or SEED: the runtime writes neither into it.
    assert task.runtime_values(budget=1.0, seed=3) == {}
    assert task.trial_inputs()["ro_mounts"] == (
        (checkout["repo"].resolve() / "prepare.py", "/bilevel/checkout/prepare.py"),
        (checkout["cache"].resolve(), "~/.cache/autoresearch"))
    with pytest.raises(EditError, match="TIME_BUDGET"):
        task.check_budget(30)
    task.check_budget(1)


def test_checkout_problems_are_refused_before_anything_runs(checkout):
    repo, cache = checkout["repo"], checkout["cache"]
    with pytest.raises(EditError, match="needs --repo"):
        resolve("karpathy")
    with pytest.raises(EditError, match="--repo and --cache are for --task karpathy"):
        resolve("tinygpt", repo=repo)
    empty = checkout["tmp"] / "empty-cache"
    empty.mkdir()
    with pytest.raises(EditError, match=r"missing or empty: run `uv run prepare.py`"):
        karpathy.load_checkout(repo, empty)
    assert not any(empty.iterdir())  # nothing created
    (repo / "prepare.py").unlink()
    with pytest.raises(EditError, match="no prepare.py"):
        karpathy.load_checkout(repo, cache)
