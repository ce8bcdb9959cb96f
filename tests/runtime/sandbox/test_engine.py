"""The engine's orphan sweep: containers of dead orchestrators go, a live one's stay."""

from __future__ import annotations

import os
import subprocess

import pytest

from bilevel.runtime import policy
from bilevel.runtime.sandbox import engine, hardening


@pytest.mark.docker
def test_orphans_of_dead_orchestrators_are_swept(docker_client):
    dead = subprocess.Popen(["true"])
    dead.wait()
    p = policy.load()
    made = []
    for owner in (f"{os.uname().nodename}:{dead.pid}", hardening.owner_label()):
        kw = hardening.container_kwargs(p, "trial", "bilevel-trial:latest", ["sleep", "60"])
        kw["labels"][hardening.LABEL_OWNER] = owner
        made.append(docker_client.containers.create(**kw))
    try:
        removed = engine.sweep_orphans(docker_client)
        assert made[0].name in removed and made[1].name not in removed
        names = {c.name for c in docker_client.containers.list(all=True)}
        assert made[0].name not in names and made[1].name in names
    finally:
        made[1].remove(force=True)
