"""Parallel slots through the CLI, the real daemon and the journal: trials overlap, in-flight
configurations never repeat, kill -9 with two trials in flight then resume loses and doubles
nothing, and proposals are drafted while trials run (the scripted LLM answers with a latency)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from parallel_runs import one_cpu_policy_fixture, overlapping, run_args, stamp, view_of  # noqa: F401 (one_cpu_policy_fixture is a fixture)

from bilevel.runtime.journal.store import Journal

from bilevel_cli import BILEVEL
from fake_llm import Text, fake_llm_fixture  # noqa: F401

pytestmark = pytest.mark.docker


def test_two_slots_run_at_once_on_disjoint_cpus_and_end_with_the_trial_budget(tmp_path, one_cpu_policy):
    run = tmp_path / "run"
    r = subprocess.run(run_args(run, one_cpu_policy, 4), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    view = view_of(run)
    assert view.run.state == "finished"
    assert [t.seq for t in view.finished] == [0, 1, 2, 3, 4]          # baseline + 4, none twice
    assert sorted(rec.iteration for rec in view.iterations) == [1, 2, 3, 4]
    pairs = overlapping(view)
    assert pairs, "no two trials ever ran at once"
    for a, b in pairs:                                                # in flight together: different
        assert a.changes != b.changes
        sa, sb = view.slot_of(a.trial_id), view.slot_of(b.trial_id)
        assert sa["slot"] != sb["slot"] and not set(sa["cpuset"].split(",")) & set(sb["cpuset"].split(","))
    status = json.loads(subprocess.run([*BILEVEL, "status", str(run), "--json"], capture_output=True,
                                       text=True, timeout=60).stdout)
    assert [s["slot"] for s in status["slots"]] == [0, 1] and all(s["state"] == "idle" for s in status["slots"])
    assert (run / "slots.png").read_bytes()[:4] == b"\x89PNG" and "## Slots" in (run / "report.md").read_text()
    # A view of a later draft listed the trials in flight (the mechanism contract's `pending`).
    assert any(rec.payload["parallel"]["pending"] for rec in view.iterations)


def _wait_running(run: Path, n: int, proc, timeout=300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        if (run / "journal.db").exists():
            try:
                with Journal.open_readonly(run) as j:
                    running = [t for t in j.trials() if t["status"] == "running" and t["kind"] == "proposal"]
                if len(running) >= n:
                    return
            except Exception:
                pass
        time.sleep(0.3)
    raise AssertionError(f"never {n} trials in flight")


def test_kill_9_with_two_trials_in_flight_then_resume_loses_and_doubles_nothing(tmp_path, one_cpu_policy,
                                                                                 docker_client):
    run = tmp_path / "run"
    proc = subprocess.Popen(run_args(run, one_cpu_policy, 3), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_running(run, 2, proc)
    with Journal.open_readonly(run) as j:
        in_flight = {t["seq"]: t["changes"] for t in j.trials() if t["status"] == "running"}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run([*BILEVEL, "resume", str(run)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    view = view_of(run)
    assert view.run.state == "finished"
    assert [t.seq for t in view.finished] == [0, 1, 2, 3]                 # exactly the budget, once each
    assert view.trial_counts()["interrupted"] == 2 and view.trial_counts()["running"] == 0
    assert sorted(rec.iteration for rec in view.iterations) == [1, 2, 3]  # every iteration decided once
    by_seq = {t.seq: t for t in view.finished}
    for seq, changes in in_flight.items():                                 # rerun with their recorded changes
        assert by_seq[seq].changes == changes and by_seq[seq].attempt == 2
    assert docker_client.containers.list(all=True, filters={"label": f"bilevel.run={view.run.run_id}"}) == []


@pytest.mark.parametrize("slots", [1, 2])
def test_proposals_are_drafted_while_the_previous_trials_run(tmp_path, one_cpu_policy, fake_llm, slots):
    """With one slot too (`trial.draft_ahead`, the default): the next proposal's LLM call runs
    while the trial before it does, so the slot waits for the LLM only before the first trial."""
    count = itertools.count()

    def responder(msgs: list[dict]) -> Text:
        lr = round(0.0013 + 0.0007 * next(count), 5)   # never the default 1e-3: every answer is usable
        return Text(json.dumps({"changes": {"LEARNING_RATE": lr}, "hypothesis": f"lr {lr}"}), delay_s=2.0)

    fake_llm.responder = responder
    run = tmp_path / "run"
    env = {**os.environ, "BILEVEL_LLM_BASE_URL": fake_llm.base_url, "BILEVEL_LLM_API_KEY": "sk-test"}
    r = subprocess.run(run_args(run, one_cpu_policy, 4, "--llm", "fake-model", "--parallel", str(slots)),
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    view = view_of(run)
    assert [t.seq for t in view.finished] == [0, 1, 2, 3, 4]
    trials = {t.iteration: t for t in view.finished if t.iteration > 0}
    inside = []
    for rec in view.iterations:
        p = rec.payload["parallel"]
        earlier = [trials[i] for i in p["pending"]]                       # the trials running while it drafted
        for t in earlier:
            if stamp(t.started_at) <= stamp(p["drafted_at"]) and stamp(p["ready_at"]) <= stamp(t.ended_at):
                inside.append((rec.iteration, t.iteration))
    # At least one LLM call (2 s each) lay wholly inside an earlier trial's run: the slot did not wait.
    assert inside, [r.payload["parallel"] for r in view.iterations]
    assert len(fake_llm.requests) >= 4
    assert {r.payload["parallel"]["slot"] for r in view.iterations} == set(range(slots))
    assert all(r.payload["llm"] == "usable" for r in view.iterations)   # each proposal's LLM answer, judged
