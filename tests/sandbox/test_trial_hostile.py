"""Hostile trial scripts, run through the real sandbox: each asserts the outcome and that the
host was not touched. Every script lives in tests/sandbox/hostile/ and runs in code mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from bilevel.runtime.sandbox import executor

from locations import HOSTILE

pytestmark = pytest.mark.docker


@pytest.fixture
def run(docker_client, test_policy, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "canary.txt").write_text("canary\n")

    def _run(name: str, budget: float = 2.0, **subs) -> executor.TrialResult:
        source = (HOSTILE / f"{name}.py").read_text()
        for key, value in subs.items():
            source = source.replace(key, str(value))
        result = executor.run_trial(
            docker_client, test_policy, script=source, budget_s=budget,
            work_dir=tmp_path / "trial", data_dir=data,
        )
        # Whatever happened inside, the container is gone afterwards (invariant 4).
        left = docker_client.containers.list(all=True, filters={"label": f"bilevel.trial={result.trial_id}"})
        assert left == []
        return result

    _run.data = data
    _run.work = tmp_path / "trial"
    return _run


def _payload(result, tag: str) -> dict:
    m = re.search(rf"^{tag} (.*)$", result.log_tail, re.M)
    assert m, f"the script never reported {tag}: {result.log_tail[-500:]}"
    return json.loads(m.group(1))


def test_control_script_is_read_exactly(run):
    r = run("control_ok")
    assert (r.status, r.val_bpb, r.training_seconds, r.exit_code) == ("ok", 1.234567, 0.5, 0)
    assert r.startup_seconds is not None and r.startup_seconds < r.wall_seconds


def test_cannot_reach_host_loopback(run, loopback_listener):
    r = run("net_loopback", PORT=loopback_listener.port)
    seen = _payload(r, "NET")
    assert seen["ifaces"] == ["lo"]                       # no interface but its own loopback
    assert seen["127.0.0.1"].startswith("blocked")
    assert loopback_listener.accepted == []               # the host's listener saw nothing
    assert r.status == "invalid" and r.val_bpb is None    # and no metric either


def test_cannot_write_outside_output_folder(run):
    r = run("write_outside")
    wrote = _payload(r, "WROTE")
    assert {k for k, v in wrote.items() if v} == {"/out/ok.txt", "/tmp/ok.txt"}
    assert (run.data / "canary.txt").read_text() == "canary\n"
    assert (run.work / "out" / "ok.txt").read_text() == "pwned\n"
    assert (run.work / "train.py").read_text() == (HOSTILE / "write_outside.py").read_text()


def test_cannot_read_host_secret(run, monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("BILEVEL_TEST_SECRET", secret)
    assert os.environ["BILEVEL_TEST_SECRET"] == secret
    r = run("env_secret")
    env = _payload(r, "ENV")
    assert secret not in r.log_tail and secret not in json.dumps(env)
    # Only what the engine sets, and LC_CTYPE, which Python sets for itself (PEP 538).
    assert set(env) - {"pid1"} <= {"PATH", "HOSTNAME", "HOME", "PWD", "LC_CTYPE"}


def test_fork_stops_at_pids_limit(run, test_policy):
    r = run("fork_count")
    forked = int(re.search(r"FORKED (\d+)", r.log_tail).group(1))
    assert 0 < forked < test_policy.trial["pids"]
    assert r.status == "invalid"
    assert subprocess.run(["true"]).returncode == 0      # the host can still fork


def test_fork_bomb_is_contained_and_killed(run):
    r = run("fork_bomb", budget=1.0)
    assert r.status == "timeout"
    assert r.wall_seconds < 1.0 + 6 + 10
    assert subprocess.run(["true"]).returncode == 0


def test_memory_bomb_is_oom(run):
    r = run("memory_bomb", budget=20.0)
    assert r.status == "oom", r.reason
    assert r.exit_code == 137 and r.val_bpb is None


def test_sleeper_is_killed_at_deadline(run):
    r = run("sleeper", budget=1.0)
    assert r.status == "timeout"
    assert 1.0 + 6 <= r.wall_seconds < 1.0 + 6 + 8


def test_stdout_flood_is_capped(run, test_policy):
    r = run("flood", budget=1.0)
    cap = test_policy.trial["log_kb"] * 1024
    assert r.status == "timeout"
    log = (run.work / "log.txt").read_bytes()
    assert len(log) <= cap + 200 and b"bytes dropped" in log


def test_nan_metric_is_invalid(run):
    r = run("nan_loss")
    assert r.status == "invalid" and r.val_bpb is None
    assert "finite" in r.reason


def test_forged_second_summary_is_invalid(run):
    r = run("two_summaries")
    assert r.status == "invalid" and r.val_bpb is None
    assert "separators" in r.reason


def test_repeated_key_is_invalid(run):
    r = run("repeated_key")
    assert r.status == "invalid" and r.val_bpb is None
    assert "repeated" in r.reason


def test_output_folder_cap(run, test_policy):
    r = run("output_bomb", budget=20.0)
    assert r.status == "crash" and "output" in r.reason
    written = sum(f.stat().st_size for f in (run.work / "out").iterdir())
    # The total is watched every 0.1 s (each file is hard-capped by RLIMIT_FSIZE): killed
    # within a few polls of crossing the cap, at this attack's ~50 MB/s.
    assert test_policy.trial["output_mb"] * 2**20 < written <= 32 * 2**20


def _out_entries(work) -> int:
    return sum(len(dirs) + len(files) for _root, dirs, files in os.walk(work / "out"))


def test_output_entry_cap(run, test_policy):
    r = run("output_entries", budget=20.0)
    cap = test_policy.trial["output_entries"]
    assert r.status == "crash" and f"cap of {cap} entries" in r.reason, r.reason
    # Stopped within a few polls of the cap, far before the budget ran out.
    assert cap < _out_entries(run.work) and r.wall_seconds < 20.0


def test_output_depth_cap(run, test_policy):
    r = run("output_deep", budget=20.0)
    depth = test_policy.trial["output_depth"]
    assert r.status == "crash" and f"deeper than its cap of {depth} levels" in r.reason, r.reason
    assert r.wall_seconds < 20.0


def test_output_links_are_refused_even_after_a_clean_exit(run):
    r = run("output_symlink")
    # The script exited 0 with a well-formed summary: the check after the end still refuses it.
    assert r.status == "crash" and "symbolic link" in r.reason and "links are refused" in r.reason, r.reason
    assert r.val_bpb is None
    assert os.path.islink(run.work / "out" / "root")     # left as it was: never followed, never opened


@pytest.mark.parametrize(("kind", "named"), [("fifo", "a FIFO"), ("socket", "a socket")])
def test_output_special_files_are_refused(run, kind, named):
    r = run("output_special", budget=20.0, KIND=kind)
    assert r.status == "crash" and f"holds {named}" in r.reason, r.reason
    assert r.wall_seconds < 20.0                          # stopped while it ran, not at the deadline


def test_walls_seen_from_inside(run, test_policy):
    seen = _payload(run("walls"), "WALLS")
    uid, gid = (int(x) for x in test_policy.user.split(":"))
    # No capability in any set, and none can be regained (bounding set 0, no_new_privs).
    assert {k: int(v, 16) for k, v in seen["status"].items() if k.startswith("Cap")} == {
        "CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}
    assert seen["status"]["NoNewPrivs"] == "1"
    # `/` is mounted read-only, so even world-writable folders of the image refuse a write.
    assert "ro" in seen["mounts"]["/"]["opts"]
    assert seen["writes"]["/var/tmp/x"].startswith("OSError:30")       # EROFS, not a permission error
    assert not any(v == "written" for v in seen["writes"].values())
    assert (seen["uid"], seen["gid"]) == (uid, gid) and seen["tmp_owner"] == [uid, gid]
    assert seen["mounts"]["/tmp"]["fstype"] == "tmpfs" and "nosuid" in seen["mounts"]["/tmp"]["opts"]
    assert seen["ifaces"] == ["lo"]


def test_trial_container_as_created(run, monkeypatch, docker_client, test_policy):
    """The trial's own container, inspected while it exists (run_trial removes it afterwards)."""
    from bilevel.runtime.sandbox import supervisor

    seen = {}
    real = supervisor.watch

    def inspecting(container, **kw):
        seen.update(docker_client.api.inspect_container(container.id))
        return real(container, **kw)

    monkeypatch.setattr(supervisor, "watch", inspecting)
    run("control_ok")
    host, cfg = seen["HostConfig"], seen["Config"]
    limits = test_policy.trial
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["ReadonlyRootfs"] is True
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert cfg["User"] == test_policy.user
    tmp = host["Tmpfs"]["/tmp"].split(",")
    assert f"uid={test_policy.user.split(':')[0]}" in tmp and f"gid={test_policy.user.split(':')[1]}" in tmp
    assert host["Memory"] == host["MemorySwap"] == limits["memory_mb"] * 2**20
    assert host["PidsLimit"] == limits["pids"] and host["NanoCpus"] == int(limits["cpus"] * 1e9)
    assert host["Init"] is True and host["LogConfig"]["Config"]["max-size"] == "1m"
    cap = limits["output_mb"] * 2**20
    assert {"Name": "fsize", "Soft": cap, "Hard": cap} in host["Ulimits"]
    assert [e for e in cfg["Env"] or [] if not e.startswith("PATH=")] == []
    writable = [m["Destination"] for m in seen["Mounts"] if m["RW"]]
    assert writable == ["/out"]
