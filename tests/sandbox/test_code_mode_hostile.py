"""Hostile code-mode trials through the real daemon: the training container, the model container
and the trusted evaluator. Each asserts the outcome, the gate that caught it, and that the host
was not touched (the task's data unchanged, no container of the trial left)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from bilevel.inner import tasks
from bilevel.runtime import policy as policies
from bilevel.runtime.evaluation.code_trial import run_code_trial
from bilevel.runtime.sandbox import executor, runtimes

import code_mode_scripts

pytestmark = pytest.mark.docker

# The model container's limits for these tests, over the suite's test policy.
EVALUATION = {"memory_mb": 768, "deadline_s": 60.0, "checkpoint_mb": 1}


@pytest.fixture(scope="module")
def task():
    return tasks.load("tinygpt")


@pytest.fixture(scope="module")
def needle(task) -> dict[str, str]:
    """40 bytes of the validation split found nowhere in the training split, as two hex halves;
    and 40 bytes of a file both containers do hold (the harness), the search's positive control."""
    data = task.data_dir()
    val, train = (data / "val.bin").read_bytes(), (data / "train.bin").read_bytes()
    at = next(i for i in range(0, len(val) - 40, 97) if val[i : i + 40] not in train)
    control = task.code_inputs()["harness"].read_bytes()[200:240]
    return {"NEEDLE_A": val[at : at + 20].hex(), "NEEDLE_B": val[at + 20 : at + 40].hex(),
            "CONTROL_A": control[:20].hex(), "CONTROL_B": control[20:].hex()}


def _data_hashes(task) -> dict[str, str]:
    data = task.data_dir()
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.iterdir())}


@pytest.fixture
def run(docker_client, task, tmp_path, test_policy):
    before = _data_hashes(task)

    def _run(script: str, *, budget: float = 1.0, runtime: str = "auto", **evaluation) -> executor.TrialResult:
        trial_id = executor.new_trial_id()
        limits = {**test_policy.evaluation, **EVALUATION, **evaluation}
        # A generous grace: the training container's start-up (torch's import) on a loaded 2-core
        # machine took several seconds, more than the suite's 6 s.
        trial = {**test_policy.trial, "grace_s": 60, "runtime": runtime}
        policy = policies.from_data({**test_policy.data, "trial": trial, "evaluation": limits}, "test")
        result = run_code_trial(docker_client, policy, script=script, budget_s=budget,
                                work_dir=tmp_path / trial_id, code_inputs=task.code_inputs(), trial_id=trial_id,
                                secret=12345)
        # Whatever happened inside, both containers are gone (invariant 4) and the data is unchanged.
        assert docker_client.containers.list(all=True, filters={"label": f"bilevel.trial={trial_id}"}) == []
        assert _data_hashes(task) == before
        return result

    return _run


def test_the_incumbent_trains_and_the_evaluator_scores_it(run):
    r = run(code_mode_scripts.small())
    assert (r.status, r.gate, r.mode) == ("ok", None, "code"), (r.reason, r.log_tail[-1500:])
    assert 1.0 < r.val_bpb < 8.5          # from the evaluator; bytes of a model trained for a second
    assert r.checkpoint_sha and len(r.checkpoint_sha) == 64
    assert set(r.evaluation_seconds) == {"startup", "metric", "gates"}
    assert r.training_seconds >= 1.0       # the supervisor's clock: at least the budget


def test_under_runsc_the_model_answers_over_its_stdio(run, docker_client, test_policy):
    """gVisor does not connect to host sockets: there the frames cross the attached stdio."""
    status = runtimes.runsc_status(docker_client, test_policy)
    if not status.works:
        pytest.skip(f"runsc cannot run here, so only the socket channel was tested: {status.detail}")
    r = run(code_mode_scripts.small(), runtime="runsc")
    assert (r.status, r.gate) == ("ok", None), (r.reason, r.log_tail[-1500:])
    assert 1.0 < r.val_bpb < 8.5


def test_training_cannot_find_the_validation_split(run, needle):
    r = run(code_mode_scripts.hostile("looks_for_val", **needle))
    assert r.status == "ok", r.reason
    found = json.loads(re.search(r"^SEARCH (.*)$", r.log_tail, re.M).group(1))
    assert found["hits"] == [] and not [n for n in found["named"] if n.endswith("val.bin")]
    assert "/data" in found["mounts"] and found["files"] >= 1       # it did search the data mount
    assert found["control"], "the search finds nothing even where the text is: the test is void"


def test_a_forged_summary_is_ignored(run):
    r = run(code_mode_scripts.hostile("forged_summary"))
    assert "val_bpb: 0.000100" in r.log_tail
    assert r.status == "ok" and r.val_bpb > 1.0      # the evaluator's number, not the script's


def test_a_model_that_peeks_at_future_tokens_fails_causality(run):
    r = run(code_mode_scripts.hostile("peeking_model"))
    assert (r.status, r.gate) == ("invalid", "causality"), r.reason
    assert r.val_bpb is None and "future tokens" in r.reason


def test_a_model_that_remembers_earlier_batches_fails_the_order_gate(run):
    r = run(code_mode_scripts.hostile("remembering_model"))
    assert (r.status, r.gate) == ("invalid", "order"), r.reason
    assert "keeps state" in r.reason


@pytest.mark.parametrize("name, needle", [
    ("pickle_checkpoint", "pickle"),
    ("big_checkpoint", "over the cap of 1048576"),
    ("no_checkpoint", "no checkpoint was written"),
])
def test_a_bad_checkpoint_is_refused_with_the_reason(run, name, needle):
    r = run(code_mode_scripts.hostile(name))
    assert (r.status, r.gate) == ("invalid", "checkpoint"), r.reason
    assert needle in r.reason and r.val_bpb is None


def test_an_edit_beyond_the_interface_is_invalid(run):
    r = run(code_mode_scripts.hostile("broken_interface"))
    assert (r.status, r.gate) == ("invalid", "interface"), r.reason
    assert "build_model" in r.reason


def test_the_model_finds_no_validation_data_in_its_container(run, needle):
    r = run(code_mode_scripts.hostile("model_searches", **needle))
    assert (r.status, r.gate) == ("invalid", "interface"), r.reason
    found = json.loads(r.reason[r.reason.index("FOUND ") + 6 :])
    for when in ("import", "forward"):
        seen = found[when]
        assert seen["hits"] == 0 and seen["memory_hits"] == 0 and seen["bins"] == [], seen
        assert seen["memory_mb"] > 10 and seen["files"] >= 3       # it did look
        assert seen["control"], "the search finds nothing even where the text is: the test is void"
        assert not seen["data_mount"]


def test_the_model_cannot_open_a_second_channel_to_the_host(run):
    """The host accepts one connection and then removes the socket; its folder is read-only."""
    r = run(code_mode_scripts.hostile("second_channel"))
    assert (r.status, r.gate) == ("invalid", "interface"), r.reason
    tried = json.loads(r.reason[r.reason.index("CHANNEL ") + 8 :])
    assert tried["connect"] in ("FileNotFoundError", "ConnectionRefusedError"), tried
    assert tried["write"] != "ok" and tried["list"] != "ok", tried    # the folder is gone, and was not listable
    assert len(tried["options"]) == 1 and "ro" in tried["options"][0].split(","), tried   # and mounted read-only


def test_a_model_past_the_deadline_is_killed(run):
    r = run(code_mode_scripts.hostile("slow_model"), deadline_s=15.0)
    assert (r.status, r.gate) == ("invalid", "deadline"), r.reason


def test_a_model_past_its_memory_limit_fails_the_memory_gate(run):
    r = run(code_mode_scripts.hostile("greedy_model"))
    assert (r.status, r.gate) == ("invalid", "memory"), r.reason
