"""Whole runs against the real daemon and journal: offline end to end, resume after SIGKILL,
deadlines, refusals, replay. Trials use a 1-2 s training budget to keep the suite short."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView

from bilevel_cli import BILEVEL

pytestmark = pytest.mark.docker


def bilevel(*args, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*BILEVEL, *args], capture_output=True, text=True, timeout=timeout, **kw)


def journal_of(run_dir: Path) -> Journal:
    return Journal.open_readonly(run_dir)


def test_offline_run_all_levels(tmp_path):
    run = tmp_path / "run"
    r = bilevel("run", "--iterations", "3", "--budget", "1", "--strategy-every", "1",
                "--research-every", "1", "--run-dir", str(run))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "OFFLINE" in r.stdout
    with journal_of(run) as j:
        s = RunView.read(j).status()
        finished = RunView.read(j).finished
        events = j.events("iteration")
        levels = {d["level"] for d in j.decisions()}
    assert s["state"] == "finished"
    assert [t.seq for t in finished] == [0, 1, 2, 3]            # baseline + 3, none twice
    assert len(events) == 3 and levels == {"1.5", "2"}
    mechs = [m for m in s["mechanisms"] if m["origin"] == "library"]
    assert mechs and all(sum(m["calls"].values()) > 0 for m in mechs)   # activated mechanisms ran
    rows = list(csv.reader((run / "results.tsv").read_text().splitlines(), delimiter="\t"))
    assert rows[0] == ["commit", "val_bpb", "memory_gb", "status", "description"] and len(rows) == 5
    assert (run / "report.md").exists() and (run / "progress.png").read_bytes()[:4] == b"\x89PNG"
    again = bilevel("run", "--iterations", "3", "--budget", "1", "--strategy-every", "1",
                    "--research-every", "1", "--run-dir", str(run))
    assert again.returncode == 0 and "already finished" in again.stdout
    with journal_of(run) as j:
        assert len(j.trials()) == 4                                 # the second command did nothing
    status = json.loads(bilevel("status", str(run), "--json").stdout)
    assert status["state"] == "finished" and status["trials"]["ok"] == 4


def _wait_running_trial(run: Path, min_seq: int, proc, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        if (run / "journal.db").exists():
            try:
                with journal_of(run) as j:
                    if any(t["status"] == "running" and t["seq"] >= min_seq for t in j.trials()):
                        return
            except Exception:
                pass
        time.sleep(0.3)
    raise AssertionError("no trial started in time")


def test_killed_twice_then_resumed_counts_each_trial_once(tmp_path, docker_client):
    run = tmp_path / "run"
    args = ["run", "--iterations", "4", "--budget", "2", "--levels", "1", "--run-dir", str(run)]
    for min_seq in (1, 3):
        proc = subprocess.Popen([*BILEVEL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_running_trial(run, min_seq, proc)
        time.sleep(1.0)
        live = json.loads(bilevel("status", str(run), "--json").stdout)   # read-only while live
        assert live["state"] == "running" and live["trials"]["running"] == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    r = bilevel("resume", str(run))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with journal_of(run) as j:
        finished = RunView.read(j).finished
        counts = RunView.read(j).trial_counts()
        state = j.run()["state"]
        run_id = j.run()["run_id"]
    assert state == "finished"
    assert [t.seq for t in finished] == [0, 1, 2, 3, 4]      # 1 baseline + 4 iterations, each once
    assert counts["interrupted"] == 2 and counts["running"] == 0
    # The containers of the killed orchestrators were swept (this run's: the daemon may be shared).
    assert docker_client.containers.list(
        all=True, filters={"label": ["bilevel.role=trial", f"bilevel.run={run_id}"]}) == []


def test_resume_refuses_a_changed_setting(tmp_path):
    run = tmp_path / "run"
    r = bilevel("run", "--iterations", "1", "--budget", "1", "--levels", "1", "--run-dir", str(run),
                "--hours", "1")
    assert r.returncode == 0, r.stderr
    r = bilevel("run", "--iterations", "2", "--budget", "3", "--levels", "1", "--run-dir", str(run))
    assert r.returncode == 2 and "budget" in r.stderr
    r = bilevel("resume", str(run), "--iterations", "2")            # a bigger budget is allowed
    assert r.returncode == 0, r.stderr
    with journal_of(run) as j:
        assert len(RunView.read(j).finished) == 3


def test_hours_deadline_ends_the_run_on_time(tmp_path):
    run = tmp_path / "run"
    t0 = time.monotonic()
    r = bilevel("run", "--iterations", "100", "--budget", "1", "--levels", "1", "--hours", str(45 / 3600),
                "--run-dir", str(run))
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    with journal_of(run) as j:
        run_row = j.run()
        assert run_row["state"] == "finished" and "deadline" in run_row["state_reason"]
        assert 2 <= len(RunView.read(j).finished) < 100
    assert wall < 45 + 30     # the deadline, plus process start-up and the report


def test_failed_baseline_fails_the_run_and_replays_identically(tmp_path):
    pol = tmp_path / "tight.toml"
    pol.write_text("[trial]\nmemory_mb = 48\n")
    run = tmp_path / "run"
    r = bilevel("run", "--iterations", "2", "--budget", "1", "--levels", "1", "--policy", str(pol),
                "--run-dir", str(run))
    assert r.returncode == 1
    with journal_of(run) as j:
        assert j.run()["state"] == "failed"
        t = RunView.read(j).finished[0]
    assert t.status in ("oom", "crash")
    rep = bilevel("replay", str(run), "trial", "0")
    assert rep.returncode == 0 and "same outcome" in rep.stdout, rep.stdout + rep.stderr
    assert f"recorded: {t.status}" in rep.stdout
    report = (run / "report.md").read_text()
    assert f"bilevel replay {run} trial 0" in report


def test_sigterm_stops_gracefully_and_resumes(tmp_path):
    run = tmp_path / "run"
    args = ["run", "--iterations", "3", "--budget", "2", "--levels", "1", "--run-dir", str(run)]
    proc = subprocess.Popen([*BILEVEL, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_running_trial(run, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    with journal_of(run) as j:
        assert j.run()["state"] == "stopped"
        assert RunView.read(j).trial_counts()["running"] == 0
    r = bilevel("resume", str(run))
    assert r.returncode == 0
    with journal_of(run) as j:
        assert [t.seq for t in RunView.read(j).finished] == [0, 1, 2, 3]
    assert os.path.exists(run / "log.jsonl")
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert events and all("run_id" in e and "trial_id" in e for e in events)
