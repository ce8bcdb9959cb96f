"""Trial slots: how a run with `--parallel N` shares the machine among N trials at once.

Each slot is a disjoint share, so trials never contend: on CPU its own `cpuset_cpus` (no two
slots share a core), and the policy's GPU ids split across slots (one or more per slot; with
fewer GPUs than slots, slots share them round-robin and the plan says so). One slot is today's
single trial: no cpuset, every GPU the policy gives. The plan is derived from the policy and
the CPUs this process may use, and is the one place those shares are decided.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from bilevel.runtime.policy import Policy


class SlotError(ValueError):
    """A `--parallel` the machine or the policy cannot give disjoint shares for."""


@dataclass(frozen=True)
class Slot:
    index: int
    cpuset: str | None          # e.g. "0" or "2-3"; None: the policy's CPU limit only (one slot)
    cpus: float                 # the CPU limit of the slot's containers
    gpus: tuple[int, ...] | None  # GPU ids of this slot; None: no GPU; () all (one slot only)

    def describe(self) -> str:
        cpu = f"cpus {self.cpuset}" if self.cpuset is not None else f"{self.cpus:g} cpus"
        gpu = "" if self.gpus is None else " gpu all" if not self.gpus else f" gpu {','.join(map(str, self.gpus))}"
        return cpu + gpu

    def to_dict(self) -> dict:
        return {"slot": self.index, "cpuset": self.cpuset, "cpus": self.cpus,
                "gpus": None if self.gpus is None else list(self.gpus)}


def available_cpus() -> list[int]:
    """The CPUs this process may run on (the daemon on this host gives containers the same)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def host_gpu_ids() -> list[int]:
    """The GPU ids this host shows as device nodes (for a policy that says `gpus = "all"`)."""
    ids = []
    for p in Path("/dev").glob("nvidia[0-9]*"):
        suffix = p.name.removeprefix("nvidia")
        if suffix.isdigit():
            ids.append(int(suffix))
    return sorted(ids)


def _cpuset(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def plan(policy: Policy, n: int, cpus: list[int] | None = None, gpus: list[int] | None = None,
         cluster: bool = False) -> list[Slot]:
    """N slots with disjoint CPU sets and their share of the policy's GPUs; SlotError if impossible.

    `cluster` (the Ray executor): Ray places each trial by its CPU and GPU counts on whichever node
    has them, and assigns the GPU ids there, so a slot carries no cpuset and its GPU count only.
    """
    if n < 1:
        raise SlotError("--parallel must be at least 1")
    limit = float(policy.trial["cpus"])
    ids = policy.gpu_ids()
    if n == 1 and not cluster:  # today's single trial, exactly
        return [Slot(0, None, limit, None if ids is None else tuple(ids))]
    if cluster:
        per_gpu = None if ids is None else tuple(range(max(1, len(ids) // n) if ids else 1))
        return [Slot(i, None, limit, per_gpu) for i in range(n)]
    cpus = available_cpus() if cpus is None else cpus
    per = math.ceil(limit)
    if per * n > len(cpus):
        raise SlotError(f"--parallel {n} needs {per * n} CPUs for disjoint sets of {per} (the policy's "
                        f"trial.cpus = {limit:g}); this machine gives {len(cpus)}: lower --parallel or trial.cpus")
    share: list[tuple[int, ...] | None] = [None] * n
    if ids is not None:
        pool = (host_gpu_ids() if gpus is None else gpus) if not ids else ids
        if not pool:
            raise SlotError("the policy asks for GPUs but this host shows none (/dev/nvidia*)")
        if len(pool) >= n:
            k = len(pool) // n
            share = [tuple(pool[i * k:(i + 1) * k]) for i in range(n)]
        else:
            share = [(pool[i % len(pool)],) for i in range(n)]
    return [Slot(i, _cpuset(cpus[i * per:(i + 1) * per]), min(limit, per), share[i]) for i in range(n)]
