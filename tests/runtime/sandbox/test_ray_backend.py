"""The Ray backend's sweep of every node (a real local Ray instance on 127.0.0.1, the real daemon):
each node's daemon removes the sandboxes whose owner on that node is gone, and keeps the others."""

from __future__ import annotations

import os
import subprocess

import pytest

from bilevel.runtime import policy
from bilevel.runtime.sandbox import hardening

ray = pytest.importorskip("ray", reason="the optional extra; scripts/setup.sh installs it for the tests")

from bilevel.runtime.sandbox.ray_backend import RayBackend  # noqa: E402

pytestmark = pytest.mark.docker


def test_every_node_sweeps_the_orphans_of_dead_owners_and_keeps_live_ones(docker_client):
    dead = subprocess.Popen(["true"])
    dead.wait()
    p = policy.load()
    made = []
    for owner in (f"{os.uname().nodename}:{dead.pid}", hardening.owner_label()):
        kw = hardening.container_kwargs(p, "trial", "bilevel-trial:latest", ["sleep", "60"])
        kw["labels"][hardening.LABEL_OWNER] = owner
        made.append(docker_client.containers.create(**kw))
    backend = RayBackend(num_cpus=1)
    try:
        swept = backend.sweep_nodes()
        # The one node of this instance swept, through its own daemon, the dead owner's container only.
        assert len(swept) == 1
        (removed,) = swept.values()
        assert made[0].name in removed and made[1].name not in removed
        names = {c.name for c in docker_client.containers.list(all=True)}
        assert made[0].name not in names and made[1].name in names
    finally:
        backend.close()
        made[1].remove(force=True)
