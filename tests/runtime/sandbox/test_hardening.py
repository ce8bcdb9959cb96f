"""`hardening.container_kwargs`: a parallel slot's share, and a real container that tries to leave it."""

from __future__ import annotations

import json

import pytest

from bilevel.runtime import policy
from bilevel.runtime.sandbox import executor, hardening

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
