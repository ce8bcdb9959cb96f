"""No mechanism can end or stall a run: hostile modules delivered by a scripted Level 2 answer.

A real run (the real daemon, real sandboxed mechanisms, the openai SDK against the scripted
server on 127.0.0.1): Level 2 writes a mechanism whose constraints forbid every constant, then
one whose review throws every candidate away. Each is quarantined with the reason as soon as
its output leaves nothing to run, every iteration still runs a trial, the run finishes, and a
resume neither restores them nor falls into the same hole.
"""

from __future__ import annotations

import json
import os
import subprocess
from itertools import count

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

from bilevel_cli import BILEVEL
from fake_llm import fake_llm_fixture, last_user  # noqa: F401

pytestmark = pytest.mark.docker

WALL = '''```python
class Mechanism:
    name = "wall"

    def constraints(self, view):
        return {"forbid": sorted(view["space"]), "ranges": {}}
```'''
ERASER = '''```python
class Mechanism:
    name = "eraser"

    def review(self, candidates, view):
        return []
```'''
CALM = '''```python
class Mechanism:
    name = "calm"

    def observe(self, record):
        pass
```'''


def hostile_responder():
    modules, lrs = iter([WALL, ERASER]), count(1)

    def respond(msgs: list[dict]) -> str:
        text = last_user(msgs)
        system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
        if "steer a hyperparameter search" in system:
            return json.dumps({"freeze": [], "unfreeze": [], "guidance": ""})
        if "tune the hyperparameter constants" in system:  # a new, admissible proposal each time
            return json.dumps({"changes": {"LEARNING_RATE": round(0.001 + 0.0003 * next(lrs), 5)},
                               "hypothesis": "a little more learning rate"})
        if "Write the complete mechanism module" in text:
            return next(modules, CALM)
        if "DECISION:" in text:
            return "DECISION: add\nSpec: see the module."
        return "Nothing to add."
    return respond


def _run(args: list[str], fake) -> subprocess.CompletedProcess:
    env = {**os.environ, "BILEVEL_LLM_BASE_URL": fake.base_url, "BILEVEL_LLM_API_KEY": "sk-test"}
    return subprocess.run([*BILEVEL, *args], capture_output=True, text=True, timeout=900, env=env)


def test_hostile_constraints_and_reviews_are_quarantined_and_the_run_goes_on(tmp_path, fake_llm):
    fake_llm.responder = hostile_responder()
    run = tmp_path / "run"
    r = _run(["run", "--llm", "fake-model", "--iterations", "3", "--budget", "1", "--strategy-every", "1",
              "--research-every", "1", "--run-dir", str(run)], fake_llm)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        mechs = {m.name: m for m in view.mechanisms}
        events = [e["payload"] for e in j.events("iteration")]
        assert view.run.state == "finished"
        wall_calls = len(j.mechanism_calls(mechs["wall"].mech_id))
    assert len(events) == 3 and all(e["trial_id"] for e in events)   # every iteration ran a trial
    wall, eraser = mechs["wall"], mechs["eraser"]
    # Level 2's first session runs beside the first trial (its proposal was drafted before it), so
    # the wall first meets the proposal of iteration 2, and the eraser (session 1) that of iteration 3.
    assert wall.state == "quarantined" and wall.quarantined_at_iteration == 2
    assert wall.quarantine_reason.startswith("no_candidate in constraints (call ")
    assert "leave no admissible candidate" in wall.quarantine_reason
    assert eraser.state == "quarantined" and eraser.quarantined_at_iteration == 3
    assert eraser.quarantine_reason.startswith("no_candidate in review")
    assert "wall" not in events[0]["effects"] and wall.mech_id not in events[0]["parallel"]["mechanisms"]
    assert events[1]["effects"]["wall"]["quarantined"].startswith("constraints:")
    # Without the eraser's output, the proposer's candidate ran.
    assert events[2]["source"] == "proposer" and "LEARNING_RATE" in events[2]["changes"]
    assert "eraser" in events[2]["effects"]

    # A resume does not bring them back and does not fall into the same hole.
    r = _run(["resume", str(run), "--iterations", "5"], fake_llm)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with Journal.open_readonly(run) as j:
        view = RunView.read(j)
        events = [e["payload"] for e in j.events("iteration")]
        assert view.run.state == "finished" and len(events) == 5
        assert len(j.mechanism_calls(mechs["wall"].mech_id)) == wall_calls   # never called again
    assert {m.name: m.state for m in view.mechanisms}["wall"] == "quarantined"
    assert all("wall" not in e["effects"] and "eraser" not in e["effects"] for e in events[3:])

    # The quarantine is replayable like any other failure: the failing call reproduces.
    r = subprocess.run([*BILEVEL, "replay", str(run), "mechanism", str(wall.mech_id)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
