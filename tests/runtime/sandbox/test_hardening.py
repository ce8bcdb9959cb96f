"""The trial container's settings, asserted directly from `hardening.container_kwargs`, and a
parallel slot's share (its cpuset and GPU ids), with a real container that tries to leave it.

Behaviour alone cannot tell some walls apart on this machine (the daemon has no bridge, so a
default network shows only `lo`; the user is not root, so its capabilities are empty either way),
so each setting of invariant 4 is asserted here, for trials, on its own. The created container's
inspect and the view from inside are checked in tests/sandbox/test_trial_hostile.py.
"""

from __future__ import annotations

import json

import pytest

from bilevel.runtime import policy
from bilevel.runtime.sandbox import executor, hardening

POLICY = policy.parse("[trial]\nmemory_mb = 512\npids = 64\ncpus = 1.5\ntmpfs_mb = 32\noutput_mb = 4\n", "t")


@pytest.fixture(params=["trial", "mechanism"])
def role(request):
    return request.param


def _kwargs(role: str) -> dict:
    return hardening.container_kwargs(POLICY, role, "img", ["python3"], labels={hardening.LABEL_TRIAL: "t1"})


def test_every_sandbox_is_walled(role):
    kw = _kwargs(role)
    limits = POLICY.trial if role == "trial" else POLICY.mechanism
    assert kw["network_mode"] == "none"
    assert kw["read_only"] is True
    assert kw["cap_drop"] == ["ALL"] and "cap_add" not in kw
    assert kw["security_opt"] == ["no-new-privileges"]
    assert kw["user"] == "65534:65534"
    assert "privileged" not in kw and "pid_mode" not in kw and "ipc_mode" not in kw
    assert kw["environment"] == {}
    assert kw["mem_limit"] == kw["memswap_limit"] == f"{limits['memory_mb']}m"
    assert kw["pids_limit"] == limits["pids"]
    assert kw["nano_cpus"] == int(float(limits["cpus"]) * 1e9)
    assert kw["init"] is True
    assert kw["log_config"].type == "json-file" and kw["log_config"].config["max-size"] == "1m"
    opts = kw["tmpfs"]["/tmp"].split(",")
    assert "uid=65534" in opts and "gid=65534" in opts and "nosuid" in opts and "nodev" in opts
    assert f"size={limits.get('tmpfs_mb', 16)}m" in opts
    assert kw["labels"][hardening.LABEL_ROLE] == role and kw["labels"][hardening.LABEL_OWNER]


def test_trial_settings_are_the_trial_policys():
    kw = _kwargs("trial")
    assert (kw["mem_limit"], kw["pids_limit"], kw["nano_cpus"]) == ("512m", 64, 1_500_000_000)
    assert "size=32m" in kw["tmpfs"]["/tmp"]
    fsize = [u for u in kw["ulimits"] if u.name == "fsize"]
    assert len(fsize) == 1 and fsize[0].soft == fsize[0].hard == 4 * 2**20


def test_host_mounts_are_read_only():
    kw = hardening.container_kwargs(POLICY, "trial", "img", ["x"], host_mounts=["/usr", "/lib"])
    assert [(m["Target"], m["ReadOnly"]) for m in kw["mounts"]] == [("/usr", True), ("/lib", True)]


def test_runtime_is_passed_and_runsc_gets_room_for_its_own_threads():
    runc = hardening.container_kwargs(POLICY, "mechanism", "img", ["x"])
    runsc = hardening.container_kwargs(POLICY, "mechanism", "img", ["x"], runtime="runsc")
    assert runc["runtime"] == "runc" and runsc["runtime"] == "runsc"
    assert runc["pids_limit"] == POLICY.mechanism["pids"]
    assert runsc["pids_limit"] == max(POLICY.mechanism["pids"], hardening.RUNSC_PIDS_FLOOR)
    for key in ("network_mode", "read_only", "cap_drop", "security_opt", "user", "mem_limit"):
        assert runsc[key] == runc[key]     # the second wall adds to the first, never replaces it


def test_policy_runtime_choices():
    assert POLICY.trial["runtime"] == POLICY.mechanism["runtime"] == "auto"
    with pytest.raises(policy.PolicyError, match="mechanism.runtime"):
        policy.parse('[mechanism]\nruntime = "kata"')


def test_runtime_resolution_per_kind(monkeypatch):
    from bilevel.runtime.sandbox import runtimes

    def pol(trial: str, mech: str) -> policy.Policy:
        return policy.parse(f'[trial]\nruntime = "{trial}"\n[mechanism]\nruntime = "{mech}"\n', "t")

    for works in (True, False):
        monkeypatch.setattr(runtimes, "runsc_status", lambda c, p, w=works: runtimes.RunscStatus(w, "why"))
        auto = pol("auto", "auto")
        assert runtimes.runtime_for(None, auto, "trial") == "runc"
        assert runtimes.runtime_for(None, auto, "mechanism") == ("runsc" if works else "runc")
        assert runtimes.runtime_for(None, pol("runc", "runc"), "mechanism") == "runc"
        if works:
            assert runtimes.runtime_for(None, pol("runsc", "runsc"), "trial") == "runsc"
        else:
            # Fail closed: asked for runsc and it cannot run, the sandbox does not start on runc.
            with pytest.raises(runtimes.RuntimeUnavailable, match='runtime = "runsc"'):
                runtimes.runtime_for(None, pol("auto", "runsc"), "mechanism")


ESCAPE = """
import json, os
before = sorted(os.sched_getaffinity(0))
try:
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))   # try to take every core
    error = None
except OSError as exc:
    error = exc.errno
print("CPUS " + json.dumps({"before": before, "after": sorted(os.sched_getaffinity(0)), "error": error}))
"""


def test_a_slots_cpuset_pins_the_container_and_caps_its_cpu_limit():
    p = policy.parse("[trial]\ncpus = 2.0\n", "test")
    kw = hardening.container_kwargs(p, "trial", "img", ["true"], cpuset="1")
    assert kw["cpuset_cpus"] == "1" and kw["nano_cpus"] == 1_000_000_000   # never more than its cores
    wide = hardening.container_kwargs(p, "trial", "img", ["true"], cpuset="0-3")
    assert wide["nano_cpus"] == 2_000_000_000                                 # the policy's limit holds
    assert "cpuset_cpus" not in hardening.container_kwargs(p, "trial", "img", ["true"])


def test_a_slots_gpu_ids_replace_the_policys():
    p = policy.parse("[gpu]\ngpus = [0, 1]\n", "test")
    kw = hardening.container_kwargs(p, "trial", "img", ["true"], gpu=True, gpu_ids=(1,))
    assert kw["device_requests"][0]["DeviceIDs"] == ["1"]


@pytest.mark.docker
def test_a_trial_cannot_leave_its_slots_cores(docker_client, test_policy, tmp_path):
    r = executor.run_trial(docker_client, test_policy, script=ESCAPE, budget_s=2.0, work_dir=tmp_path / "t",
                           cpuset="0")
    line = next(x for x in r.log_tail.splitlines() if x.startswith("CPUS "))
    seen = json.loads(line[5:])
    assert seen["before"] == [0] and seen["after"] == [0]    # pinned, and asking for more changes nothing
