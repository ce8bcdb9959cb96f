"""Fault injection on whole runs: the Docker daemon restarted under a trial, and the LLM
endpoint down for a stretch. Each asserts nothing lost, nothing doubled, the run completes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.sandbox import engine, hardening

from bilevel_cli import BILEVEL
from fake_llm import Delay, Status, fake_llm_fixture  # noqa: F401

pytestmark = pytest.mark.docker


def _running_seq(run: Path) -> int | None:
    try:
        with Journal.open_readonly(run) as j:
            return next((t["seq"] for t in j.trials() if t["status"] == "running"), None)
    except Exception:
        return None


def _restart_dockerd() -> int:
    """Restart exactly the daemon behind the project's socket, with the command line it had.

    Never one picked by name: on a machine with a second Docker daemon, `pidof dockerd` named the
    other one, and this test killed it. The pid comes from the socket itself (SO_PEERCRED, see
    `engine.daemon_pid`). Returns the new daemon's pid.
    """
    pid = engine.daemon_pid()
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"dockerd {pid} did not exit within 30 s of SIGTERM")
    with open(os.environ.get("BILEVEL_DOCKERD_LOG", "/tmp/bilevel-dockerd.log"), "ab") as log:
        subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    engine.connect(wait_s=60)
    new = engine.daemon_pid()
    assert new != pid, "the daemon behind our socket was not restarted"
    return new


def _our_trial_container(client, orchestrator_pid: int):
    """The one trial container the run `orchestrator_pid` owns, running now, or None."""
    owner = f"{os.uname().nodename}:{orchestrator_pid}"
    found = client.containers.list(filters={"label": [f"{hardening.LABEL_OWNER}={owner}",
                                                      f"{hardening.LABEL_ROLE}=trial"]})
    return found[0] if len(found) == 1 and found[0].status == "running" else None


@pytest.mark.skipif(os.geteuid() != 0, reason="restarting dockerd needs root (CI runs as root)")
def test_daemon_restart_during_a_trial_is_infra_and_retried(tmp_path):
    run = tmp_path / "run"
    client = engine.connect()
    proc = subprocess.Popen([*BILEVEL, "run", "--levels", "1", "--iterations", "1", "--budget", "8",
                             "--run-dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        container = None
        for _ in range(600):
            if _running_seq(run) == 1:
                container = _our_trial_container(client, proc.pid)
                if container is not None:
                    break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        assert container is not None, "trial 1's container never ran"
        time.sleep(2)
        # The restart must fall while that container runs: checked just before the signal.
        container.reload()
        assert container.attrs["State"]["Running"], "trial 1's container ended before the restart"
        old_pid = engine.daemon_pid()
        new_pid = _restart_dockerd()
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert new_pid != old_pid
    with Journal.open_readonly(run) as j:
        attempts = [t for t in j.trials() if t["seq"] == 1]
        state = j.run()["state"]
        counts = RunView.read(j).trial_counts()
    assert state == "finished"
    # Retried as infrastructure failures, never counted as a crash of the proposal.
    assert [t["status"] for t in attempts] == ["infra"] * (len(attempts) - 1) + ["ok"]
    assert 2 <= len(attempts) <= 3
    assert counts["crash"] == 0 and counts["ok"] == 2


def test_llm_endpoint_down_for_a_stretch_then_recovers(tmp_path, fake_llm):
    fake_llm.script(Status(503), Status(503), Status(503))
    fake_llm.responder = lambda msgs: json.dumps({"changes": {"LEARNING_RATE": 0.002}, "hypothesis": "h"})
    run = tmp_path / "run"
    env = {**os.environ, "BILEVEL_LLM_BASE_URL": fake_llm.base_url, "BILEVEL_LLM_API_KEY": "k"}
    r = subprocess.run([*BILEVEL, "run", "--llm", "fake-model", "--levels", "1", "--iterations", "1",
                        "--budget", "1", "--max-tokens", "20000", "--run-dir", str(run)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    with Journal.open_readonly(run) as j:
        assert j.run()["state"] == "finished"
        events = [e["payload"] for e in j.events("iteration")]
    assert events[0]["changes"] == {"LEARNING_RATE": 0.002}          # the LLM's proposal, after recovery
    db = sqlite3.connect(f"file:{run / 'journal.db'}?mode=ro", uri=True)
    attempts = db.execute("SELECT attempts, outcome FROM llm_calls ORDER BY id").fetchall()
    assert attempts[0] == (4, "ok")                                   # three 503s backed off, then success
    gaps = [b.at - a.at for a, b in zip(fake_llm.requests, fake_llm.requests[1:], strict=False)]
    # It backed off between attempts. Full jitter draws each wait from [0, cap], so one wait may
    # be near 0 (a per-gap bound failed 1 run in ~10); three together fall under 0.3 s ~1 in 2,000.
    assert sum(gaps[:3]) > 0.3


def test_deadline_reached_mid_trial_kills_it_as_the_policy_says(tmp_path):
    pol = tmp_path / "p.toml"
    # startup_s near zero lets the baseline start 7 s before the deadline although 6 s of training
    # plus start-up and evaluation cannot fit: the deadline then falls inside that trial.
    pol.write_text('[trial]\nstartup_s = 0.001\nnear_deadline = "kill"\n')
    run = tmp_path / "run"
    t0 = time.monotonic()
    r = subprocess.run([*BILEVEL, "run", "--levels", "1", "--iterations", "5", "--budget", "6",
                        "--hours", str(7 / 3600), "--policy", str(pol), "--run-dir", str(run)],
                       capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    with Journal.open_readonly(run) as j:
        row = j.run()
        counts = RunView.read(j).trial_counts()
    assert row["state"] == "finished" and "deadline reached during a trial" in row["state_reason"]
    assert counts["interrupted"] == 1 and counts["running"] == 0 and counts["ok"] == 0
    assert wall < 7 + 20


def test_sigkill_during_an_llm_call_then_resume(tmp_path, fake_llm):
    reply = json.dumps({"changes": {"LEARNING_RATE": 0.002}, "hypothesis": "h"})
    fake_llm.script(Delay(60, reply))                                  # the first proposal hangs
    fake_llm.responder = lambda msgs: reply
    run = tmp_path / "run"
    env = {**os.environ, "BILEVEL_LLM_BASE_URL": fake_llm.base_url, "BILEVEL_LLM_API_KEY": "k"}
    args = [*BILEVEL, "run", "--llm", "fake-model", "--levels", "1", "--iterations", "2", "--budget", "1",
            "--run-dir", str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(1200):
            if fake_llm.requests:
                break
            assert proc.poll() is None
            time.sleep(0.1)
        assert fake_llm.requests, "the run never called the LLM"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    r = subprocess.run([*BILEVEL, "resume", str(run)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    with Journal.open_readonly(run) as j:
        assert j.run()["state"] == "finished"
        assert [t.seq for t in RunView.read(j).finished] == [0, 1, 2]    # nothing lost, nothing doubled
        assert len(j.events("iteration")) == 2
