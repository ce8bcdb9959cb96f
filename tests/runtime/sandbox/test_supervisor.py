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


def test_output_of_a_container_that_ended_before_the_attach_is_not_lost(docker_client, test_policy):
    """A script can finish before the supervisor's attach reaches the engine (a loaded machine,
    a fast script): its output must still be read, or an ok trial would look like no summary."""
    kw = hardening.container_kwargs(
        test_policy, "trial", images.image_for(docker_client, "trial").id,
        ["python3", "-I", "-c", "print('---'); print('val_bpb: 1.5'); print('training_seconds: 0.1')"],
        labels={hardening.LABEL_TRIAL: "late-attach-test"},
    )
    container = docker_client.containers.create(name=f"bilevel-test-{uuid.uuid4().hex[:12]}", **kw)
    real_attach = container.attach

    def late_attach(**kwargs):
        container.wait(timeout=30)          # the script has ended before the attach is made
        return real_attach(**kwargs)

    container.attach = late_attach
    try:
        w = supervisor.watch(container, deadline_s=20, log_cap=4096)
    finally:
        container.remove(force=True)
    assert w.exit_code == 0 and w.killed_for is None
    assert w.summary.result()[0]["val_bpb"] == 1.5 and "val_bpb: 1.5" in w.log.text()
