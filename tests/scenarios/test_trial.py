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
    # Under --json the error is one JSON object on stdout (issue 13, item 7); without, a line on stderr.
    error = json.loads(r.stdout)
    assert r.returncode == 2 and error["exit_code"] == 2 and r.stdout.count("\n") == 1
    assert "no Docker daemon answers" in error["error"] and "scripts/engine.sh" in error["error"]
    r = subprocess.run([*BILEVEL, "trial", "--script", str(HOSTILE / "control_ok.py")],
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


def _swept_by(stderr: str) -> str:
    """The `swept_orphans` warnings `bilevel trial` printed (as sentences: it has no run log)."""
    return "\n".join(line for line in stderr.splitlines() if line.startswith("bilevel: warning: swept orphans"))


@pytest.mark.docker
def test_trial_command_sweeps_orphans_on_start_up(docker_client, tmp_path):
    """A container left by a dead orchestrator is removed by `bilevel trial` as it starts.

    Its own log must name the orphan: on a shared daemon another suite's sweep may remove it
    first, so a try where that happened is repeated (three in a row would mean no sweep here).
    """
    from bilevel.runtime import policy
    from bilevel.runtime.sandbox import images

    image = images.image_for(docker_client, "trial").id
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = docker_client.containers.create(**hardening.container_kwargs(policy.load(), "trial", image, ["true"]))
    try:
        for attempt in range(3):
            kw = hardening.container_kwargs(policy.load(), "trial", image, ["sleep", "60"])
            kw["labels"][hardening.LABEL_OWNER] = f"{os.uname().nodename}:{dead.pid}"
            orphan = docker_client.containers.create(**kw)
            r = subprocess.run([*BILEVEL, "trial", "--script", str(HOSTILE / "control_ok.py"), "--budget", "1",
                                "--out", str(tmp_path / f"t{attempt}"), "--json"],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            assert not docker_client.containers.list(all=True, sparse=True, filters={"id": orphan.id})
            if orphan.name in _swept_by(r.stderr):
                break
        else:
            raise AssertionError("`bilevel trial` never swept an orphaned container on start-up")
        # A live orchestrator's container (this test's) is left alone.
        assert docker_client.containers.list(all=True, sparse=True, filters={"id": live.id})
    finally:
        live.remove(force=True)
