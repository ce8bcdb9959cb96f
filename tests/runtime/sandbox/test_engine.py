"""The engine's orphan sweep: containers of dead orchestrators go, a live one's stay."""

from __future__ import annotations

import os
import subprocess
import sys

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


LISTEN = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def _listener(path, argv0: str) -> subprocess.Popen:
    """A child process (named `argv0`) listening on the Unix socket `path`."""
    # Named by argv[0] alone, Python cannot find its standard library: PYTHONHOME says where.
    exe = os.path.realpath(sys.executable)
    proc = subprocess.Popen(["bash", "-c", f'exec -a {argv0} "$0" -c "$1" "$2"', exe, LISTEN, str(path)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHOME": sys.base_prefix})
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_socket_owner_is_the_listening_process_not_one_named_dockerd(tmp_path):
    # Two "dockerd"s: the decoy is started first, so a lookup by name would pick it first.
    decoy = _listener(tmp_path / "other.sock", "dockerd")
    ours = _listener(tmp_path / "ours.sock", "dockerd")
    try:
        assert engine.socket_owner_pid(tmp_path / "ours.sock") == ours.pid
        assert engine.daemon_pid(f"unix://{tmp_path / 'ours.sock'}") == ours.pid
        assert engine.daemon_pid(f"unix://{tmp_path / 'other.sock'}") == decoy.pid
    finally:
        for p in (decoy, ours):
            p.kill()
            p.wait()


def test_a_socket_held_by_something_else_is_not_taken_for_the_daemon(tmp_path):
    proc = _listener(tmp_path / "s.sock", "python3")
    try:
        with pytest.raises(engine.DaemonNotFound, match="not dockerd"):
            engine.daemon_pid(f"unix://{tmp_path / 's.sock'}")
    finally:
        proc.kill()
        proc.wait()


def test_no_listener_or_a_remote_host_is_refused(tmp_path):
    with pytest.raises(engine.DaemonNotFound, match="nothing listens"):
        engine.daemon_pid(f"unix://{tmp_path / 'none.sock'}")
    with pytest.raises(engine.DaemonNotFound, match="not a local Unix socket"):
        engine.socket_path("tcp://127.0.0.1:2375")
    assert str(engine.socket_path("")) == engine.DEFAULT_SOCKET
