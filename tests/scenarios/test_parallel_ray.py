"""`--executor ray` through the CLI on a real local Ray instance bound to 127.0.0.1 (the run
starts it and stops it): the same hardened containers on the node's daemon, two slots at once,
and a Ray worker killed under a trial is an infrastructure failure, rerun, its container gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import ray  # noqa: F401  (the optional extra; scripts/setup.sh installs it for the tests)
from parallel_runs import one_cpu_policy_fixture, overlapping, run_args, view_of  # noqa: F401 (one_cpu_policy_fixture is a fixture)

from bilevel.runtime.journal.store import Journal

from bilevel_cli import BILEVEL

pytestmark = pytest.mark.docker


def test_two_slots_through_ray_run_at_once_and_end_with_the_trial_budget(tmp_path, one_cpu_policy):
    run = tmp_path / "run"
    r = subprocess.run(run_args(run, one_cpu_policy, 3, "--executor", "ray"), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    view = view_of(run)
    assert view.run.state == "finished" and [t.seq for t in view.finished] == [0, 1, 2, 3]
    pairs = overlapping(view)
    assert pairs and all(a.changes != b.changes for a, b in pairs)
    assert view.trial_counts()["infra"] == 0


def _running_container(docker_client, run: Path, proc, timeout=300):
    """A proposal trial container of THIS run (filtered by its run id: the daemon is shared)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        run_id = None
        if (run / "journal.db").exists():
            with Journal.open_readonly(run) as j:
                row = j.run()
                run_id = row["run_id"] if row else None
        if run_id:
            for c in docker_client.containers.list(filters={"label": f"bilevel.run={run_id}"}):
                with Journal.open_readonly(run) as j:
                    trial = j.trial(int(c.labels["bilevel.trial"]))
                if trial and trial["kind"] == "proposal":
                    return c
        time.sleep(0.3)
    raise AssertionError("no proposal trial container started in time")


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether `pid` is a descendant of `ancestor` (never kill a process this test did not start)."""
    while pid > 1:
        if pid == ancestor:
            return True
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return False


def test_a_killed_ray_worker_is_an_infra_failure_rerun_and_its_container_is_gone(tmp_path, one_cpu_policy,
                                                                                  docker_client):
    run = tmp_path / "run"
    args = [*BILEVEL, "run", "--iterations", "2", "--budget", "1", "--levels", "1", "--executor", "ray",
            "--policy", str(one_cpu_policy), "--run-dir", str(run)]
    env = {**os.environ, "BILEVEL_LLM_API_KEY": "sk-test-SECRET-ray"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    container = _running_container(docker_client, run, proc)
    # The container's owner label names the Ray worker that started it: kill that worker.
    worker_pid = int(container.labels["bilevel.owner"].rsplit(":", 1)[1])
    assert worker_pid != proc.pid and _descends_from(worker_pid, proc.pid)   # a worker of this run's Ray
    # Invariant 1: the orchestrator's secrets did not reach the Ray worker's environment.
    assert b"sk-test-SECRET-ray" not in Path(f"/proc/{worker_pid}/environ").read_bytes()
    os.kill(worker_pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    view = view_of(run)
    assert view.run.state == "finished" and [t.seq for t in view.finished] == [0, 1, 2]
    lost = [t for t in view.attempts if t.status == "infra"]
    assert len(lost) == 1 and "Ray lost trial" in (lost[0].reason or "")
    rerun = next(t for t in view.finished if t.seq == lost[0].seq)
    assert rerun.attempt == 2 and rerun.changes == lost[0].changes
    names = {c.id for c in docker_client.containers.list(all=True)}
    assert container.id not in names
