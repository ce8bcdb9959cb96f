"""Shared fixtures for the mechanism sandbox tests (imported explicitly, not via conftest).

The container-backed fixtures need the Docker daemon and `bilevel-mechanism:latest`; CI
builds the images first, so a missing image is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest

from bilevel.runtime import policy
from bilevel.runtime.mechanisms.host import SandboxedMechanism, container_factory
from bilevel.runtime.mechanisms.wire import LineBuffer
from bilevel.runtime.sandbox import engine, hardening, images, runtimes

from locations import ROOT

DAEMON = ROOT / "sandbox" / "images" / "mechanism" / "daemon.py"
LIBRARY = ROOT / "outer" / "library"
SECRET_NAME = "BILEVEL_REDTEAM_SECRET"

# Short deadlines and a small step budget keep hostile tests fast; fuel must run out well
# before the deadline so that "fuel" and "timeout" stay distinguishable. Under runsc (gVisor) a
# system call costs microseconds, and on a loaded 2-core machine 200,000 steps of a print loop
# (each a malloc that may reach the kernel) passed 1.5 s: hence a 3 s deadline.
MECH_POLICY = """
[mechanism]
memory_mb = 128
pids = 16
cpus = 1.0
call_timeout_s = 3.0
load_timeout_s = 6.0
fuel = 200000
"""


# Two small mechanisms the host, daemon and CLI tests share.
COUNTER = """
class Mechanism:
    name = "counter"

    def __init__(self):
        self.n = 0

    def observe(self, record):
        self.n += 1
        if self.n == 3 and record.get("fail"):
            raise ValueError("third call fails")

    def context(self, view):
        return [{"title": "count", "text": str(self.n)}]
"""

STEADY = """
import random

class Mechanism:
    name = "steady"

    def suggest(self, view):
        return [{"changes": {"LEARNING_RATE": round(random.random(), 6)}, "hypothesis": "r"}]
"""


def mech_policy() -> policy.Policy:
    return policy.parse(MECH_POLICY, "mechanism-test")


@pytest.fixture(scope="session")
def mech_client():
    """The real daemon with a current mechanism image (a stale image fails the test run)."""
    client = engine.connect()
    engine.sweep_orphans(client)
    images.image_for(client, "mechanism")
    # The red team runs under runsc (gVisor) wherever it works; where it does not, it runs under
    # runc and says why, once, as a warning in pytest's summary: never a silent fallback.
    status = runtimes.runsc_status(client, mech_policy())
    if not status.works:
        warnings.warn(f"mechanism tests run under runc, not runsc: {status.detail}", stacklevel=1)
    return client


def mech_runtime(client) -> str:
    """The runtime the mechanism tests' sandboxes use on this machine."""
    return runtimes.runtime_for(client, mech_policy(), "mechanism")


@pytest.fixture
def make_mech(mech_client):
    """Build-and-start helper; every sandbox it started is removed at teardown."""
    made: list[SandboxedMechanism] = []

    def make(source: str, *, mech_id="m", seed=0, pol=None, start=True, **kw):
        m = SandboxedMechanism(mech_id, source, policy=pol or mech_policy(), seed=seed,
                               transport_factory=container_factory(mech_client), **kw)
        made.append(m)
        if start:
            m.start()
        return m

    yield make
    for m in made:
        m.close()


def our_containers(client) -> list:
    """Mechanism containers this test process created and has not removed."""
    owner = hardening.owner_label()
    return [c for c in client.containers.list(all=True, filters={
        "label": [f"{hardening.LABEL_ROLE}=mechanism", f"{hardening.LABEL_OWNER}={owner}"]})]


@pytest.fixture
def host_secret(monkeypatch) -> str:
    """A unique secret in this (host) process's environment; no output may ever contain it."""
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_NAME, secret)
    return secret


class SubprocessTransport:
    """The daemon as a plain local subprocess: for fast tests of the protocol logic only.

    Not a sandbox (no container): it lives in the tests, never in `runtime/`, so production
    code cannot pick it up (invariant 3).
    """

    def __init__(self, pol: policy.Policy) -> None:
        import RestrictedPython

        site = str(Path(RestrictedPython.__file__).resolve().parents[1])
        kb = str(pol.mechanism["max_message_kb"])
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(DAEMON), "--max-message-kb", kb, "--site", site],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={},
        )
        self.lines = LineBuffer(int(kb) * 1024)
        self.killed = False

    def send(self, data: bytes, deadline: float) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv_line(self, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        while True:
            line = self.lines.pop_line()
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no reply before the deadline")
            data = os.read(fd, 1 << 16)
            if not data:
                raise EOFError("daemon closed its output")
            self.lines.feed(data)

    def kill(self) -> None:
        self.killed = True
        self.proc.kill()

    def death(self) -> tuple[str, str]:
        code = self.proc.wait(5)
        return "error", f"daemon exited with {code}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def subprocess_factory(pol: policy.Policy) -> SubprocessTransport:
    return SubprocessTransport(pol)


def dump(obj) -> str:
    return json.dumps(obj, default=str)
