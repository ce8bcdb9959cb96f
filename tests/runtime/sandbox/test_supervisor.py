"""The supervisor's look at /out after the container has ended, on its own.

With a poll longer than the container's life, the loop never scans while it runs: only the check
after the end can see the link the script left, so this fails if that check is removed.
"""

from __future__ import annotations

import uuid

import pytest
from docker.types import Mount

from bilevel.runtime.sandbox import hardening, images, supervisor
from bilevel.runtime.sandbox.output_caps import OutputCaps

pytestmark = pytest.mark.docker


def test_a_link_left_at_exit_is_seen_after_the_end(docker_client, test_policy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    kw = hardening.container_kwargs(
        test_policy, "trial", images.image_for(docker_client, "trial").id,
        ["python3", "-I", "-c", "import os; os.symlink('/', '/out/root'); print('done')"],
        mounts=[Mount(target="/out", source=str(out), type="bind", read_only=False)],
        labels={hardening.LABEL_TRIAL: "supervisor-test"},
    )
    container = docker_client.containers.create(name=f"bilevel-test-{uuid.uuid4().hex[:12]}", **kw)
    try:
        w = supervisor.watch(container, deadline_s=60, log_cap=4096, out_dir=out,
                             out_caps=OutputCaps.from_policy(test_policy.trial), poll_s=30)
    finally:
        container.remove(force=True)
    assert w.exit_code == 0 and "done" in w.log.text()
    assert w.killed_for == "output folder holds a symbolic link ('root'); links are refused"
