"""Code mode end to end through the CLI and the real daemon: one code-mode trial, an offline
`bilevel run --mode code` that keeps a code edit measured by the evaluator, its report's diff,
and the replay of a code-mode trial giving the same outcome. Budgets of 1 s keep it short."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

import code_mode_scripts
from bilevel_cli import BILEVEL
from fake_llm import fake_llm_fixture  # noqa: F401

pytestmark = pytest.mark.docker


def bilevel(*args, timeout=900, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*BILEVEL, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_trial_in_code_mode_prints_the_evaluators_outcome(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(code_mode_scripts.hostile("peeking_model"))
    r = bilevel("trial", "--mode", "code", "--script", str(script), "--budget", "1", "--json",
                "--out", str(tmp_path / "t"))
    out = json.loads(r.stdout)
    assert r.returncode == 1 and (out["status"], out["gate"], out["mode"]) == ("invalid", "causality", "code")
    assert out["val_bpb"] is None and "causality gate" in out["reason"]


def test_offline_code_mode_run_keeps_a_code_edit_and_replays_it(tmp_path):
    run = tmp_path / "run"
    r = bilevel("run", "--mode", "code", "--iterations", "3", "--budget", "1", "--levels", "1",
                "--run-dir", str(run))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        trials = view.finished
        kept = view.kept_code_trials()
        diffs = {t.seq: j.artifacts.get_text(t.diff_ref) for t in trials}
    assert view.status()["state"] == "finished"
    assert all(t.mode == "code" and t.checkpoint_sha for t in trials if t.status == "ok")
    assert all(t.val_bpb is None or 0 < t.val_bpb < 9 for t in trials)
    edits = [rec for rec in view.iterations if rec.payload.get("edit")]
    assert edits, "no iteration ran a code edit"
    kept_edits = [t for t in kept if diffs[t.seq] and view.record_of(t.trial_id).payload.get("edit")]
    assert kept_edits, [(rec.iteration, rec.status, rec.val_bpb, rec.kept, rec.payload.get("edit")) for rec in
                        view.iterations]
    report = (run / "report.md").read_text()
    assert "## Kept code edits" in report and "```diff" in report
    seq = kept_edits[0].seq
    again = bilevel("replay", str(run), "trial", str(seq))
    assert again.returncode == 0 and "same outcome" in again.stdout, again.stdout + again.stderr


RELU2 = ("HYPOTHESIS: relu squared\n<<<<<<< SEARCH\n"
         "        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))\n=======\n"
         "        return x + self.drop(self.out(F.relu(self.fc(self.ln2(x))).square()))\n>>>>>>> REPLACE\n")


def test_with_an_llm_odd_iterations_edit_the_code_and_even_ones_its_constants(tmp_path, fake_llm):
    """The LLM gets the source fenced as data and answers a code edit; the next iteration asks it
    for constants, which go into the edited code as typed edits."""
    def responder(msgs: list[dict]) -> str:
        if "by editing its code" in msgs[0]["content"]:
            return RELU2
        return json.dumps({"changes": {"LEARNING_RATE": 0.002}, "hypothesis": "a higher learning rate"})

    fake_llm.responder = responder
    run = tmp_path / "run"
    env = {**os.environ, "BILEVEL_LLM_BASE_URL": fake_llm.base_url, "BILEVEL_LLM_API_KEY": "sk-test"}
    r = bilevel("run", "--mode", "code", "--llm", "fake-model", "--iterations", "2", "--budget", "1",
                "--levels", "1", "--run-dir", str(run), env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    first = fake_llm.requests[0].messages
    assert "by editing its code" in first[0]["content"] and "<<data:script:" in first[1]["content"]
    assert "def build_model(config" in first[1]["content"]            # the source itself, as data
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        recs = view.iterations
        scripts = {t.trial_id: j.artifacts.get_text(t.script_sha) for t in view.finished}
    assert [rec.payload.get("edit") for rec in recs] == ["llm", None]
    assert [rec.payload.get("llm") for rec in recs] == ["usable", "usable"]
    assert recs[1].payload["changes"] == {"LEARNING_RATE": 0.002}
    second = scripts[recs[1].trial_id]
    assert "LEARNING_RATE = 0.002" in second
    assert (".square()" in second) == bool(recs[0].kept)   # the edit carried on only if it was kept
