"""The mechanism host: wire format, schemas, AST policy, calls, quarantine, replay, isolation."""

from __future__ import annotations

import json
import struct
import time

import pytest
from docker.errors import NotFound

from bilevel.runtime.mechanisms.host import (
    MechanismInputError,
    MechanismSet,
    SandboxedMechanism,
    replay_path,
)
from bilevel.runtime.mechanisms.replay import read_replay
from bilevel.runtime.mechanisms.schema import SchemaError, check_output
from bilevel.runtime.mechanisms.validation import PolicyViolation, check_source, synthetic_trace
from bilevel.runtime.mechanisms.wire import (
    Demuxer,
    LineBuffer,
    MessageTooLarge,
    WireError,
    decode,
    encode,
)
from bilevel.runtime.outputs import mechanism_commands as mechanism_cli
from tests import mechanism_fixtures as fx
from tests.mechanism_fixtures import (
    mech_policy,
    our_containers,
    subprocess_factory,
)

# Shared fixtures, imported explicitly (conftest.py belongs to the lead).
make_mech = fx.make_mech
mech_client = fx.mech_client
host_secret = fx.host_secret

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


# -- wire format (no daemon) --------------------------------------------------------------


@pytest.mark.parametrize("line", [b'{"a": NaN}', b'{"a": Infinity}', b"[-Infinity]", b"1e999",
                                  b"[" * 100 + b"]" * 100, b'"\\ud800', b"{", b"9" * 5000])
def test_decode_refuses_non_json_values(line):
    with pytest.raises(WireError):
        decode(line, 1 << 16)


def test_decode_caps_size():
    with pytest.raises(MessageTooLarge):
        decode(b'"' + b"x" * 100 + b'"', 50)


def test_demuxer_keeps_stdout_across_split_frames():
    def frame(stream, payload):
        return struct.pack(">BxxxL", stream, len(payload)) + payload

    data = frame(1, b'{"ok":') + frame(2, b"noise on stderr") + frame(1, b"true}\n")
    d, got = Demuxer(), b""
    for i in range(0, len(data), 3):          # worst case: 3-byte chunks
        got += d.feed(data[i:i + 3])
    assert got == b'{"ok":true}\n'


def test_line_buffer_refuses_endless_line():
    buf = LineBuffer(10)
    buf.feed(b"x" * 11)
    with pytest.raises(MessageTooLarge):
        buf.pop_line()


# -- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("hook,value", [
    ("observe", None),
    ("context", [{"title": "t", "text": "x"}]),
    ("constraints", {"forbid": ["N_LAYER"], "ranges": {"LR": [0.001, 0.01]}}),
    ("constraints", {}),
    ("suggest", [{"changes": {"LR": 0.01, "TIED": True, "ACT": "gelu"}, "hypothesis": "h"}]),
    ("review", []),
    ("accept", "keep"), ("accept", "discard"), ("accept", None),
])
def test_schema_accepts(hook, value):
    check_output(hook, value)


@pytest.mark.parametrize("hook,value", [
    ("observe", 1),
    ("context", [{"title": "t"}]),
    ("context", [{"title": "t", "text": "x" * 5000}]),
    ("context", [{"title": "t", "text": "x", "extra": 1}]),
    ("constraints", {"forbid": "N_LAYER"}),
    ("constraints", {"ranges": {"LR": [2, 1]}}),
    ("constraints", {"ranges": {"LR": [True, 2]}}),
    ("suggest", [{"changes": {}}]),
    ("suggest", [{"changes": {"LR": [1, 2]}}]),
    ("suggest", [{"hypothesis": "no changes"}]),
    ("suggest", {"changes": {"LR": 1}}),
    ("review", [{"changes": {"LR": 1}}] * 40),
    ("accept", "maybe"), ("accept", True),
])
def test_schema_rejects(hook, value):
    with pytest.raises(SchemaError):
        check_output(hook, value)


# -- stage 1: AST policy (host side, parse only) ------------------------------------------


@pytest.mark.parametrize("source,why", [
    ("x = 1\n", "exactly one"),
    ("class Mechanism:\n    pass\nclass Mechanism:\n    pass\n", "exactly one"),
    ("import os\nclass Mechanism:\n    pass\n", "import of 'os'"),
    ("class Mechanism:\n    def __eq__(self, o):\n        return True\n", "__eq__"),
    ("class Mechanism:\n    def f(self):\n        return ().__class__\n", "__class__"),
    ("class Mechanism:\n    def f(self):\n        return type(1)\n", '"type"'),
    ("class Mechanism:\n    async def f(self):\n        pass\n", "async"),
    ("class Mechanism:\n    x = " + "(" * 100 + "1" + ")" * 100 + "\n", "nested"),
    ("class Mechanism:\n    x = " + "-" * 5000 + "1\n", "deep"),
])
def test_ast_policy_refuses(source, why):
    with pytest.raises(PolicyViolation) as exc:
        check_source(source, mech_policy())
    assert why in str(exc.value)


def test_ast_policy_allows_init_and_facades():
    check_source("import math\nfrom random import choice\nclass Mechanism:\n"
                 "    def __init__(self):\n        self.n = 0\n", mech_policy())


# -- the daemon protocol, as a local subprocess (fast; the container tests follow) ----------


def test_daemon_protocol_over_subprocess():
    m = SandboxedMechanism("p", COUNTER, policy=mech_policy(), transport_factory=subprocess_factory)
    try:
        assert m.start().ok
        assert m.hooks == ["observe", "context"]
        assert m.call("observe", {}).ok
        assert m.call("context", {}).value == [{"title": "count", "text": "1"}]
        assert m.call("suggest", {}).outcome == "absent"
        assert dict(m.calls) == {"observe": 1, "context": 1}
    finally:
        m.close()


def test_host_input_that_is_not_json_is_the_callers_error():
    m = SandboxedMechanism("p", COUNTER, policy=mech_policy(), transport_factory=subprocess_factory)
    try:
        m.start()
        with pytest.raises(MechanismInputError):
            m.call("observe", {"x": float("nan")})
        with pytest.raises(MechanismInputError):
            m.call("observe", {"x": "y" * 300_000})
        assert not m.quarantined
    finally:
        m.close()


# -- the container --------------------------------------------------------------------------


@pytest.mark.docker
def test_container_is_hardened(make_mech, mech_client):
    m = make_mech(COUNTER)
    c = mech_client.containers.get(m.transport.container.id)
    host = c.attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == 128 * 2**20 and host["PidsLimit"] == 16
    assert c.attrs["Config"]["User"] not in ("", "0", "root")
    # Empty but for the engine's default PATH: nothing of the orchestrator's environment.
    assert [e for e in c.attrs["Config"]["Env"] or [] if not e.startswith("PATH=")] == []


@pytest.mark.docker
def test_calls_are_counted_per_hook(make_mech):
    m = make_mech(COUNTER)
    _records, view = synthetic_trace(3)
    for _ in range(4):
        assert m.call("observe", {}).ok
    assert m.call("context", view).value == [{"title": "count", "text": "4"}]
    assert dict(m.calls) == {"observe": 4, "context": 1}
    assert [r.seq for r in m.records] == [0, 1, 2, 3, 4]
    assert all(r.outcome == "ok" and r.latency_ms > 0 for r in m.records)


@pytest.mark.docker
def test_third_call_failure_quarantines_and_replays(make_mech, mech_client, tmp_path, capsys):
    run = tmp_path / "run"
    journal, quarantined = [], []
    bad = make_mech(COUNTER, mech_id="7", replay_file=replay_path(run, "7"),
                    on_call=journal.append, on_quarantine=quarantined.append)
    good = make_mech(STEADY, mech_id="8", seed=3)
    mechs = MechanismSet([bad, good])
    for _ in range(5):
        mechs.call_all("observe", {"fail": True})
        assert [name for name, _ in mechs.call_all("suggest", {})] == ["steady"]
    assert bad.quarantined and not good.quarantined
    assert bad.calls["observe"] == 3 and good.calls["suggest"] == 5
    info = quarantined[0]
    assert info["seq"] == 2 and info["hook"] == "observe" and info["outcome"] == "error"
    assert "third call fails" in info["error"] and info["input"] == [{"fail": True}]
    assert info["source"] == COUNTER
    assert [r.outcome for r in journal] == ["ok", "ok", "error"]
    assert our_containers(mech_client) != [] and bad.transport is None   # its sandbox is gone
    assert mechs.status()[0]["quarantined"] is True

    header, records = read_replay(replay_path(run, "7"))
    assert header == {"mech_id": "7", "name": "counter", "source": COUNTER, "seed": 0,
                      "limits": dict(mech_policy().mechanism)}
    assert [r["outcome"] for r in records] == ["ok", "ok", "error"]
    assert set(records[0]) == {"mech_id", "seq", "hook", "input", "output", "outcome", "error",
                               "latency_ms"}
    assert mechanism_cli.replay_mechanism_command(str(run), "7") == 0
    assert "same outcome" in capsys.readouterr().out

    # A replay that does not match is reported at the first diverging call.
    lines = replay_path(run, "7").read_text().splitlines()
    changed = json.loads(lines[2])
    changed["outcome"] = "error"
    lines[2] = json.dumps(changed)
    replay_path(run, "7").write_text("\n".join(lines) + "\n")
    assert mechanism_cli.replay_mechanism_command(str(run), "7") == 1
    assert "diverges at call seq 1" in capsys.readouterr().out


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
def test_deadline_kills_and_quarantines(make_mech, mech_client):
    src = ("class Mechanism:\n    def suggest(self, view):\n        s = 'ab' * 4_000_000\n"
           "        while True:\n            s.count('ba')\n")
    m = make_mech(src)
    container = m.transport.container
    r = m.call("suggest", {})
    assert r.outcome == "timeout" and not r.ok and m.quarantined
    assert 1000 <= r.latency_ms < 4000
    with pytest.raises(NotFound):     # killed and removed
        container.reload()
    assert m.call("suggest", {}).outcome == "quarantined"


@pytest.mark.docker
def test_fuel_is_deterministic(make_mech):
    src = ("class Mechanism:\n    def suggest(self, view):\n        n = 0\n"
           "        while True:\n            n += 1\n")
    a, b = make_mech(src), make_mech(src)
    ra, rb = a.call("suggest", {}), b.call("suggest", {})
    assert ra.outcome == rb.outcome == "fuel"
    assert ra.error == rb.error and ra.fuel == rb.fuel


@pytest.mark.docker
def test_mechanisms_cannot_touch_each_other(make_mech):
    """One container per mechanism: an attacker that burns the shared-looking random facade and
    tries to rewrite facades and builtins leaves a victim's outputs exactly as in a control run."""
    attacker_src = """
import random
import math

class Mechanism:
    def observe(self, record):
        for i in range(1000):
            random.random()
        try:
            math.pi = 0
        except TypeError:
            pass
        try:
            dict.get = None
        except TypeError:
            pass
"""
    control = make_mech(STEADY, seed=11)
    expected = [control.call("suggest", {}).value for _ in range(3)]
    victim = make_mech(STEADY, seed=11)
    attacker = make_mech(attacker_src, seed=11)
    got = []
    for _ in range(3):
        assert attacker.call("observe", {}).ok
        got.append(victim.call("suggest", {}).value)
    assert got == expected


@pytest.mark.docker
def test_second_load_is_refused(make_mech):
    m = make_mech(COUNTER)
    t = m.transport
    t.send(encode({"op": "load", "source": STEADY, "limits": {}}, 1 << 20), time.monotonic() + 5)
    reply = decode(t.recv_line(time.monotonic() + 5), 1 << 20)
    assert reply["ok"] is False and "already holds" in reply["error"]["message"]


@pytest.mark.docker
def test_check_command(tmp_path, capsys, mech_client):
    good = tmp_path / "good.py"
    good.write_text(COUNTER)
    assert mechanism_cli.check_command(str(good), None, True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] and out["outputs"]["context"] == [{"title": "count", "text": "10"}]
    assert set(out["timings_ms"]) >= {"ast", "start_compile_load", "smoke", "total"}
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nclass Mechanism:\n    pass\n")
    assert mechanism_cli.check_command(str(bad), None, False) == 1
    text = capsys.readouterr().out
    assert "rejected at stage ast" in text and "import of 'os'" in text
