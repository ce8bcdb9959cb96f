"""The trial command end to end: clean-up on interrupt, failing closed, clear errors, a default trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from bilevel.runtime.sandbox import hardening

from bilevel_cli import BILEVEL, no_daemon_env
from locations import HOSTILE


def _trial_containers(client, pid: int):
    owner = f"{os.uname().nodename}:{pid}"
    # sparse: no per-container inspect, which races with the removal this test waits for.
    return client.containers.list(all=True, sparse=True, filters={"label": f"{hardening.LABEL_OWNER}={owner}"})


@pytest.mark.docker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_trial_removes_its_container(docker_client, tmp_path, sig):
    proc = subprocess.Popen(
        [*BILEVEL, "trial", "--script", str(HOSTILE / "sleeper.py"), "--budget", "60",
         "--out", str(tmp_path / "t")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            if _trial_containers(docker_client, proc.pid):
                break
            time.sleep(0.1)
        assert _trial_containers(docker_client, proc.pid), "the trial container never appeared"
        time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert _trial_containers(docker_client, proc.pid) == []


def test_trial_fails_closed_without_a_daemon(tmp_path):
    r = subprocess.run([*BILEVEL, "trial", "--script", str(HOSTILE / "control_ok.py"), "--json"],
                       env=no_daemon_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "no Docker daemon answers" in r.stderr and "scripts/engine.sh" in r.stderr


def test_bad_set_and_bad_policy_are_clear_errors(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[trial]\npids = 'many'\n")
    for args, needle in [
        (["--set", "N_LAYER=__import__('os')"], "N_LAYER"),
        (["--set", "NOPE=1"], "NOPE"),
        (["--policy", str(bad)], "trial.pids"),
    ]:
        r = subprocess.run([*BILEVEL, "trial", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)


@pytest.mark.docker
def test_default_task_trial_is_ok(tmp_path):
    r = subprocess.run([*BILEVEL, "trial", "--budget", "4", "--json", "--out", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=300)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["status"] == "ok", out.get("log_tail", r.stderr)[-2000:]
    assert 0 < out["val_bpb"] < 8 and out["training_seconds"] >= 4
    assert set(out) >= {"status", "val_bpb", "training_seconds", "wall_seconds", "peak_mem_mb",
                        "exit_code", "log_tail"}
