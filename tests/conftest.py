"""Shared fixtures: the real Docker daemon, a fast test policy, a loopback listener."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from bilevel.runtime import policy
from bilevel.runtime.sandbox import engine

TEST_POLICY = """
[trial]
memory_mb = 512
pids = 64
cpus = 1.0
tmpfs_mb = 32
output_mb = 4
output_entries = 500
output_depth = 8
log_kb = 64
grace_s = 6
"""


@pytest.fixture(scope="session")
def docker_client():
    """The real daemon. No daemon is a failure, not a skip: CI starts one (scripts/engine.sh)."""
    client = engine.connect()
    engine.sweep_orphans(client)
    return client


@pytest.fixture
def test_policy(tmp_path: Path) -> policy.Policy:
    return policy.parse(TEST_POLICY, "test")


class Listener:
    """A TCP listener on the host's loopback that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
                self.accepted.append(addr)
                conn.close()
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def loopback_listener():
    listener = Listener()
    # The listener itself must work, or "nothing connected" would prove nothing.
    with socket.create_connection(("127.0.0.1", listener.port), timeout=2):
        pass
    for _ in range(20):
        if listener.accepted:
            break
        threading.Event().wait(0.05)
    assert listener.accepted, "the loopback listener accepts no connection; the test is void"
    listener.accepted.clear()
    yield listener
    listener.close()
