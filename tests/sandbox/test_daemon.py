"""The in-container mechanism daemon, through its container: seeded determinism, fuel, one load."""

from __future__ import annotations

import time

import pytest

from bilevel.runtime.mechanisms.validation import synthetic_trace
from bilevel.runtime.mechanisms.wire import decode, encode

import mechanism_fixtures as fx
from mechanism_fixtures import COUNTER, STEADY

# Shared fixtures, imported explicitly (conftest.py belongs to the lead).
make_mech = fx.make_mech
mech_client = fx.mech_client


@pytest.mark.docker
def test_seeded_random_and_set_order_replay_identically(make_mech):
    src = """
import random

class Mechanism:
    def suggest(self, view):
        names = sorted(view["space"])
        order = "".join(n[0] for n in set(names))
        return [{"changes": {"X": random.random(), "ORDER": order}}]
"""
    _r, view = synthetic_trace(2)
    a, b, c = (make_mech(src, seed=s) for s in (5, 5, 6))
    out_a = [a.call("suggest", view).value for _ in range(3)]
    out_b = [b.call("suggest", view).value for _ in range(3)]
    assert out_a == out_b
    assert out_a != [c.call("suggest", view).value for _ in range(3)]


@pytest.mark.docker
def test_fuel_is_deterministic(make_mech):
    src = ("class Mechanism:\n    def suggest(self, view):\n        n = 0\n"
           "        while True:\n            n += 1\n")
    a, b = make_mech(src), make_mech(src)
    ra, rb = a.call("suggest", {}), b.call("suggest", {})
    assert ra.outcome == rb.outcome == "fuel"
    assert ra.error == rb.error and ra.fuel == rb.fuel


@pytest.mark.docker
def test_second_load_is_refused(make_mech):
    m = make_mech(COUNTER)
    t = m.transport
    t.send(encode({"op": "load", "source": STEADY, "limits": {}}, 1 << 20), time.monotonic() + 5)
    reply = decode(t.recv_line(time.monotonic() + 5), 1 << 20)
    assert reply["ok"] is False and "already holds" in reply["error"]["message"]
