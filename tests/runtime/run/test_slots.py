"""The slot plan: disjoint CPU sets, GPU shares, and refusals of what the machine cannot give."""

from __future__ import annotations

import pytest

from bilevel.runtime import policy
from bilevel.runtime.run.slots import SlotError, plan


def _policy(text: str = "") -> policy.Policy:
    return policy.parse(text, "test")


def _cores(cpuset: str) -> set[int]:
    return {int(c) for c in cpuset.split(",")}


def test_one_slot_is_todays_trial_exactly():
    (slot,) = plan(_policy(), 1, cpus=[0, 1])
    assert slot.cpuset is None and slot.cpus == 2.0 and slot.gpus is None


def test_slots_get_disjoint_cpusets_of_the_policys_size():
    slots = plan(_policy("[trial]\ncpus = 1.5\n"), 3, cpus=list(range(8)))
    sets = [_cores(s.cpuset) for s in slots]
    assert [len(s) for s in sets] == [2, 2, 2]
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2]) and not (sets[0] & sets[2])
    assert all(s.cpus == 1.5 for s in slots)      # the CPU limit stays the policy's


def test_more_slots_than_cpus_is_refused_with_the_fix():
    with pytest.raises(SlotError, match="--parallel 2 needs 4 CPUs"):
        plan(_policy(), 2, cpus=[0, 1])           # default trial.cpus = 2 on a 2-core machine
    with pytest.raises(SlotError, match="at least 1"):
        plan(_policy(), 0, cpus=[0, 1])


def test_gpu_ids_split_across_slots_and_shared_round_robin_when_fewer():
    p = _policy("[trial]\ncpus = 1.0\n[gpu]\ngpus = [0, 1, 2, 3]\n")
    assert [s.gpus for s in plan(p, 2, cpus=[0, 1])] == [(0, 1), (2, 3)]
    one = _policy("[trial]\ncpus = 1.0\n[gpu]\ngpus = [0]\n")
    assert [s.gpus for s in plan(one, 2, cpus=[0, 1])] == [(0,), (0,)]
    everything = _policy("[trial]\ncpus = 1.0\n[gpu]\ngpus = \"all\"\n")
    assert [s.gpus for s in plan(everything, 2, cpus=[0, 1], gpus=[0, 1])] == [(0,), (1,)]
    with pytest.raises(SlotError, match="shows none"):
        plan(everything, 2, cpus=[0, 1], gpus=[])


def test_the_policy_key_is_validated():
    assert _policy("[trial]\nparallel = 3\n").trial["parallel"] == 3
    for bad in ("0", "1.5", "true"):
        with pytest.raises(policy.PolicyError, match="trial.parallel"):
            _policy(f"[trial]\nparallel = {bad}\n")


def test_the_gpu_hours_budget_stops_the_run_once_spent():
    from bilevel.runtime.run.budgets import Budgets, Controls, Stop
    from bilevel.runtime.run.config import RunConfig

    b = Budgets(RunConfig(max_gpu_hours=1.5), {}, _policy(), Controls())
    b.check_gpu_hours(1.49)
    with pytest.raises(Stop, match="GPU-hours budget spent"):
        b.check_gpu_hours(1.5)
    Budgets(RunConfig(), {}, _policy(), Controls()).check_gpu_hours(1e9)   # no cap: never
