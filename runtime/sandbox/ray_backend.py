"""The Ray executor (`--executor ray`): Ray places a trial on a node, and that node's own Docker
daemon starts the same hardened container as the local executor.

Invariant 9: a cluster schedules; it never weakens the wall. One Ray task per trial, with the
trial's resources (`num_cpus`, `num_gpus`); the task calls `executor.run_trial` on its node, so
the container is made by `hardening.container_kwargs` exactly as locally, with the GPU ids Ray
assigned to the task (`ray.get_gpu_ids()`). Ray's `image_uri`/container runtime environment is
never used: it would put a Ray worker, with network access, inside the trial's container. The
task returns plain facts (the outcome and the capped log) and writes no journal: the
orchestrator stays its one writer. A worker or node that dies under a trial is an engine
failure (`InfraError`): the trial runner journals it `infra`, removes what it left, and reruns it.

Ray is an optional extra (`pip install .[ray]`); without `--ray-address`, a local single-node
instance bound to 127.0.0.1 is started for the run and stopped after it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bilevel.runtime.policy import Policy
from bilevel.runtime.sandbox import executor

POLL_S = 0.5
# Ray's own switches, set before it starts: no usage reports, and a single-node instance that
# binds its servers to 127.0.0.1 instead of the host's reachable address.
LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _secret(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(("BILEVEL_LLM_", "OPENAI_")) or any(w in upper for w in ("KEY", "TOKEN", "SECRET",
                                                                                    "PASSWORD"))


class RayUnavailable(RuntimeError):
    """Ray is not installed or no cluster answers; the message says how to fix it."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--executor ray needs Ray: pip install '.[ray]' (or scripts/setup.sh)") from None
    return ray


def _node_trial(policy_data: dict, policy_source: str, kwargs: dict, want_gpus: bool) -> dict:
    """Runs in a Ray worker on the node Ray chose: the node's daemon, the same hardened container."""
    ray = import_ray()
    from bilevel.runtime import policy as policies
    from bilevel.runtime.sandbox import engine

    gpu_ids = [int(g) for g in ray.get_gpu_ids()] if want_gpus else None
    kwargs = {**kwargs, "work_dir": Path(kwargs["work_dir"])}
    client = engine.connect()
    result = executor.run_trial(client, policies.from_data(policy_data, policy_source), **kwargs,
                                gpu=want_gpus, gpu_ids=gpu_ids)
    log = Path(kwargs["work_dir"], "log.txt")
    return {"result": asdict(result), "log": log.read_bytes() if log.exists() else b"",
            "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "gpu_ids": gpu_ids}


class RayBackend:
    """Submits trials as Ray tasks; `run_trial` has the local executor's signature."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.ray = self._start(address, num_cpus)
        self.local = address is None
        self._task = self.ray.remote(max_retries=0)(_node_trial)   # retries are the trial runner's

    def _start(self, address: str | None, num_cpus: int | None):
        if address is None:
            os.environ.update(LOCAL_ENV)
        ray = import_ray()
        # Invariant 1: API keys live only in the orchestrator. A local instance's raylet, and every
        # worker it forks, inherit the environment of this process as it is at `ray.init`: so the
        # secrets are out of it for that moment (the LLM client has read them already).
        secrets = {k: os.environ.pop(k) for k in list(os.environ) if _secret(k)}
        try:
            if address is None:
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # Ray raises several kinds; all mean the same to the user
            raise RayUnavailable(f"no Ray cluster at {address or 'a local instance'}: {exc}"[:500]) from None
        finally:
            os.environ.update(secrets)
        return ray

    def close(self) -> None:
        self.ray.shutdown()

    def run_trial(self, client, policy: Policy, *, cancel: threading.Event | None = None, cpuset: str | None = None,
                  gpu_ids: Any = None, gpu: bool = False, **kwargs: Any) -> executor.TrialResult:
        """One trial as one Ray task; a dead worker or node is an `InfraError`. `cpuset` is the local
        executor's: Ray places by CPU count, so the node's daemon gets the policy's CPU limit only."""
        num_gpus = len(gpu_ids) if gpu and gpu_ids else (1 if gpu else 0)
        kwargs["work_dir"] = str(kwargs["work_dir"])
        ref = self._task.options(num_cpus=float(policy.trial["cpus"]), num_gpus=num_gpus).remote(
            policy.data, policy.source, kwargs, gpu)
        while True:
            done, _ = self.ray.wait([ref], timeout=POLL_S)
            if done:
                break
            if cancel is not None and cancel.is_set():
                return self._cancel(ref, client, kwargs)
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, executor.InfraError):   # the node's daemon failed under it
                raise executor.InfraError(str(cause)) from None
            raise cause from None                         # our own bug on the node: loud, not retried
        except self.ray.exceptions.RayError as exc:       # a dead worker or node, a lost object
            raise executor.InfraError(f"Ray lost trial {kwargs.get('trial_id')}: "
                                      f"{exc.__class__.__name__}: {str(exc)[:300]}") from None
        log = Path(kwargs["work_dir"], "log.txt")
        if not log.exists():  # another node ran it: its capped log came back through Ray
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(out["log"])
        return executor.TrialResult(**out["result"])

    def _cancel(self, ref, client, kwargs: dict) -> executor.TrialResult:
        """Stop a running trial: end its Ray task, then remove its container by its labels
        (invariant 4: no container outlives its trial, even when its worker was killed)."""
        from bilevel.runtime.sandbox import engine, hardening

        self.ray.cancel(ref, force=True)
        engine.remove_labeled(client, [f"{hardening.LABEL_RUN}={kwargs.get('run_id') or ''}",
                                       f"{hardening.LABEL_TRIAL}={kwargs.get('trial_id')}"])
        return executor.TrialResult(trial_id=str(kwargs.get("trial_id")), status="interrupted",
                                    reason="cancelled while Ray ran it", val_bpb=None, training_seconds=None,
                                    wall_seconds=0.0, peak_mem_mb=None, exit_code=None, log_tail="", script_sha="")

    def _on_each_node(self, fn) -> list[tuple[dict, Any]]:
        """`fn` run once on every live node (pinned there, no CPU asked): (node, its answer) pairs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        task = self.ray.remote(num_cpus=0, max_retries=0)(fn)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                for n in nodes]
        return list(zip(nodes, self.ray.get(refs, timeout=60), strict=True))

    def sweep_nodes(self) -> dict[str, list[str]]:
        """Invariant 4 on every node: each node's daemon removes the sandboxes whose owner (the
        Ray worker that started them, on that node) is gone. Returns node id -> what it removed."""
        return {n["NodeID"]: removed for n, removed in self._on_each_node(_sweep_on_node)}

    def cluster(self) -> dict:
        """What `bilevel doctor --executor ray` reports: nodes, CPUs, GPUs, a Docker daemon on each."""
        return {"nodes": [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
                           "cpus": n["Resources"].get("CPU", 0), "gpus": n["Resources"].get("GPU", 0),
                           "docker": a} for n, a in self._on_each_node(_docker_on_node)]}


def _docker_on_node() -> str | None:
    """Runs on one node: its Docker daemon's version, or None when none answers."""
    from bilevel.runtime.sandbox import engine

    try:
        return engine.connect(timeout=10).version().get("Version")
    except Exception:
        return None


def _sweep_on_node() -> list[str]:
    """Runs on one node: its daemon's orphaned sandboxes removed (none when no daemon answers)."""
    from bilevel.runtime.sandbox import engine

    try:
        client = engine.connect(timeout=10)
    except Exception:
        return []
    return engine.sweep_orphans(client)
