"""The karpathy/autoresearch task adapter on a FAKE checkout, without the daemon: the space it
infers, and the checkout problems it refuses before anything runs."""

from __future__ import annotations

import pytest

from bilevel.inner import edits
from bilevel.inner.candidates import check_candidate
from bilevel.inner.edits import EditError
from bilevel.inner.tasks import karpathy, resolve

from karpathy_checkout import checkout_fixture  # noqa: F401 - the `checkout` fixture


def test_space_is_inferred_from_literal_upper_case_constants(checkout):
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"])
    s = task.space
    assert sorted(s) == ["ADAM_BETAS[0]", "ADAM_BETAS[1]", "ASPECT_RATIO", "DEPTH", "EMBEDDING_LR", "OFFSET",
                         "TOTAL_BATCH_SIZE", "USE_VE", "WARMUP_RATIO", "WINDOW_PATTERN"]
    # not the multi-line one, lower case, or the reporting constant (PEAK_FLOPS only feeds a printout)
    assert (s["ASPECT_RATIO"].type, s["ASPECT_RATIO"].values) == ("choice", (16, 32, 64, 128, 256))
    assert (s["DEPTH"].type, s["DEPTH"].values) == ("choice", (2, 4, 8, 16, 32))
    assert (s["OFFSET"].type, s["OFFSET"].min, s["OFFSET"].max) == ("int", -32, -2)
    assert (s["EMBEDDING_LR"].type, s["EMBEDDING_LR"].min, s["EMBEDDING_LR"].max) == ("float", 0.06, 6.0)
    assert (s["WARMUP_RATIO"].type, s["WARMUP_RATIO"].min, s["WARMUP_RATIO"].max) == ("float", 0.0, 1.0)
    assert s["USE_VE"].type == "bool"
    assert s["WINDOW_PATTERN"].type == "choice" and s["WINDOW_PATTERN"].values == ("SSSL",)
    assert s["DEPTH"].doc.startswith("transformer layers")
    assert task.defaults()["DEPTH"] == 8 and task.defaults_budget() == 1.0
    # The script has no TIME_BUDGET or SEED: the runtime writes neither into it.
    assert task.runtime_values(budget=1.0, seed=3) == {}
    assert task.trial_inputs()["ro_mounts"] == (
        (checkout["repo"].resolve() / "prepare.py", "/bilevel/checkout/prepare.py"),
        (checkout["cache"].resolve(), "~/.cache/autoresearch"))
    assert "checkout" not in task.trial_inputs()     # no lock file: the stock trial image
    with pytest.raises(EditError, match="TIME_BUDGET"):
        task.check_budget(30)
    task.check_budget(1)


def test_expression_and_tuple_constants_are_tunable_and_written_back(checkout):
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"])
    s = task.space
    # `2**19`: an int, stepped by powers of two; the tuple element by element, each kept in (0, 1).
    assert s["TOTAL_BATCH_SIZE"].type == "choice"
    assert s["TOTAL_BATCH_SIZE"].values == tuple(2 ** i for i in range(17, 22))
    assert (s["ADAM_BETAS[0]"].min, s["ADAM_BETAS[0]"].max) == pytest.approx((0.08, 0.98))
    assert (s["ADAM_BETAS[1]"].min, s["ADAM_BETAS[1]"].max) == pytest.approx((0.095, 0.995))
    assert task.defaults()["TOTAL_BATCH_SIZE"] == 2 ** 19 and task.defaults()["ADAM_BETAS[1]"] == 0.95
    values = edits.validate({"TOTAL_BATCH_SIZE": "262144", "ADAM_BETAS[1]": "0.99"}, s)
    out = edits.apply(task.source(), values)
    assert "TOTAL_BATCH_SIZE = 262144 " in out and "ADAM_BETAS = (0.8, 0.99) " in out
    with pytest.raises(EditError, match="not one of"):
        edits.validate({"TOTAL_BATCH_SIZE": "300000"}, s)      # not a power of two
    with pytest.raises(EditError, match="outside"):
        edits.validate({"ADAM_BETAS[1]": "1.5"}, s)


def test_share_names_stay_within_zero_and_one():
    space = karpathy.infer_space("WARMDOWN_RATIO = 0.5\nFINAL_LR_FRAC = 0.0\nH100_BF16_PEAK_FLOPS = 989.5e12\n")
    assert sorted(space) == ["FINAL_LR_FRAC", "WARMDOWN_RATIO"]
    assert all((p.min, p.max) == (0.0, 1.0) for p in space.values())


def test_a_space_file_overrides_excludes_and_adds_rules(checkout):
    f = checkout["tmp"] / "space.toml"
    f.write_text('''exclude = ["OFFSET"]
[params.DEPTH]
type = "int"
min = 2
max = 12
doc = "layers"
[[rules]]
expr = "TOTAL_BATCH_SIZE % (DEPTH * MAX_SEQ_LEN) == 0"
why = "train.py asserts it"
''')
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"], space_file=f)
    assert "OFFSET" not in task.space and (task.space["DEPTH"].type, task.space["DEPTH"].max) == ("int", 12)
    ok = {**task.defaults(), "DEPTH": 4}
    edits.check_rules(task.space, ok)                      # 2**19 % (4 * 64) == 0
    with pytest.raises(EditError, match=r"breaks the constraint .*DEPTH=6.*train.py asserts it"):
        edits.check_rules(task.space, {**task.defaults(), "DEPTH": 6})
    # The run's candidates meet the same rule before any trial: refused with the reason.
    values, why = check_candidate({"changes": {"DEPTH": 6}}, task.space, task.defaults(), [],
                                  {"forbid": {}, "ranges": {}})
    assert values is None and "breaks the constraint" in why
    assert check_candidate({"changes": {"DEPTH": 4}}, task.space, task.defaults(), [],
                           {"forbid": {}, "ranges": {}})[1] == "ok"
    assert "space" in task.fingerprint() and task.locator()["space"] == str(f.resolve())


@pytest.mark.parametrize("text, why", [
    ("[params.NOPE]\ntype = \"int\"\nmin = 1\nmax = 2\n", "NOPE is no top-level constant"),
    ("[params.DEPTH]\ntype = \"int\"\nmin = 1\nmax = 4\n", "the script's own value does not fit"),
    ("[[rules]]\nexpr = \"DEPTH % 3 == 0\"\n", "the script's own values \\(and \\[start\\]\\) break a rule"),
    ("[[rules]]\nexpr = \"__import__('os').system('x')\"\n", "names \\['__import__'\\]"),
    ("[[rules]]\nexpr = \"DEPTH.bit_length() > 1\"\n", "cannot be evaluated"),
    ("[bogus]\n", "unknown tables or keys"),
])
def test_a_bad_space_file_is_refused_naming_the_problem(checkout, text, why):
    f = checkout["tmp"] / "space.toml"
    f.write_text(text)
    with pytest.raises(EditError, match=why):
        karpathy.load_checkout(checkout["repo"], checkout["cache"], space_file=f)


def test_a_start_table_moves_the_baseline_in_the_tasks_copy_only(checkout):
    f = checkout["tmp"] / "space.toml"
    f.write_text("[start]\nTOTAL_BATCH_SIZE = 131072\nDEPTH = 4\n")
    before = (checkout["repo"] / "train.py").read_text()
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"], space_file=f)
    assert task.defaults()["TOTAL_BATCH_SIZE"] == 131072 and task.defaults()["DEPTH"] == 4
    assert "TOTAL_BATCH_SIZE = 131072 " in task.source() and (checkout["repo"] / "train.py").read_text() == before
    f.write_text("[start]\nDEPTH = 5\n")                 # not a power of two: outside the inferred space
    with pytest.raises(EditError, match=r"\[start\] does not fit: DEPTH: 5 is not one of"):
        karpathy.load_checkout(checkout["repo"], checkout["cache"], space_file=f)


def test_smoke_mounts_a_derived_prepare_and_leaves_the_checkout_alone(checkout, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = (checkout["repo"] / "prepare.py").read_bytes()
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"], smoke=True, budget=0.5)
    harness = task.trial_inputs()["ro_mounts"][0][0]
    assert harness.is_relative_to(tmp_path / "xdg") and "TIME_BUDGET = 0.5" in harness.read_text()
    assert task.defaults_budget() == 0.5 and task.locator()["smoke"] is True
    assert "prepare.py (smoke)" in task.fingerprint()
    assert (checkout["repo"] / "prepare.py").read_bytes() == before
    text = "MAX_SEQ_LEN = 512\nTIME_BUDGET = 1800\nEVAL_TOKENS = 10 * 524288  # tokens\n"
    out = karpathy.smoke_prepare(text, 30)
    assert "TIME_BUDGET = 30\n" in out and "EVAL_TOKENS = 65536  # tokens" in out   # 5242880 / 80


def test_imports_and_cuda_need_are_read_from_the_scripts(checkout):
    (checkout["repo"] / "train.py").write_text(
        "import os\ntry:\n    import resource\nexcept ImportError:\n    pass\nimport torch.nn as nn\n"
        "from prepare import X\nfrom kernels import get_kernel\nDEPTH = 2\n"
        "cap = torch.cuda.get_device_capability()\n")
    task = karpathy.load_checkout(checkout["repo"], checkout["cache"])
    assert task.imports() == ["os", "resource", "torch", "kernels"]
    assert "get_device_capability" in task.needs_cuda()
    (checkout["repo"] / "train.py").write_text("import torch\nDEPTH = 2\n"
                                              "d = 'cuda' if torch.cuda.is_available() else 'cpu'\n")
    assert karpathy.load_checkout(checkout["repo"], checkout["cache"]).needs_cuda() is None


def test_checkout_problems_are_refused_before_anything_runs(checkout):
    repo, cache = checkout["repo"], checkout["cache"]
    with pytest.raises(EditError, match="needs --repo"):
        resolve("karpathy")
    with pytest.raises(EditError, match="--repo, --cache, --space and --smoke are for --task karpathy"):
        resolve("tinygpt", repo=repo)
    empty = checkout["tmp"] / "empty-cache"
    empty.mkdir()
    with pytest.raises(EditError, match=r"missing or empty: run `uv run prepare.py`"):
        karpathy.load_checkout(repo, empty)
    assert not any(empty.iterdir())  # nothing created
    (repo / "prepare.py").unlink()
    with pytest.raises(EditError, match="no prepare.py"):
        karpathy.load_checkout(repo, cache)
