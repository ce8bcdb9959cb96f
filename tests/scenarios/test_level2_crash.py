"""Level 2 decisions are crash-safe: a SIGKILL between a session's intent and its outcome.

`BILEVEL_CRASH_AT` kills the run process at a named point (`runtime/run/levels.py::crash_point`).
After the kill a resume must carry out the same decision: one session's decision, one activated
mechanism, and no second session (the offline rule would draw a different library mechanism,
since the first is already in the journal).
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.vocabulary import RESEARCH_INTENT

from bilevel_cli import BILEVEL

pytestmark = pytest.mark.docker

ARGS = ["--iterations", "1", "--budget", "1", "--strategy-every", "1", "--research-every", "1"]


@pytest.mark.parametrize("point", ["research:intent", "research:activated"])
def test_a_kill_between_intent_and_outcome_resumes_the_same_decision(tmp_path, point):
    run = tmp_path / "run"
    env = {**os.environ, "BILEVEL_CRASH_AT": point}
    r = subprocess.run([*BILEVEL, "run", *ARGS, "--run-dir", str(run)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:] + r.stderr[-2000:]
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        intent = view.research_in_flight(0)
        assert intent is not None and intent["accepted"] and not view.decisions_at("2")
        activated_before = [m.mech_id for m in view.mechanisms]
    assert len(activated_before) == (1 if point == "research:activated" else 0)

    env.pop("BILEVEL_CRASH_AT")
    r = subprocess.run([*BILEVEL, "resume", str(run)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        intents = j.events(RESEARCH_INTENT)
        calls = {m.mech_id: sum(m.calls.values()) for m in view.mechanisms}
    sessions = view.decisions_at("2")
    assert len(intents) == 1 and len(sessions) == 1                # the session was held once
    assert sessions[0].payload["name"] == intent["name"] and sessions[0].payload["activated"]
    assert sessions[0].payload["source_ref"] == intent["source_ref"]
    assert len(view.mechanisms) == 1 and view.mechanisms[0].name == intent["name"]
    assert view.mechanisms[0].state == "active" and calls[view.mechanisms[0].mech_id] > 0
    assert view.research_in_flight(0) is None and view.run.state == "finished"
