"""The mechanism host: calls, quarantine, replay files, deadlines, isolation, hardened containers."""

from __future__ import annotations

import json

import pytest
from docker.errors import NotFound

from bilevel.runtime.mechanisms.host import (
    MechanismInputError,
    MechanismSet,
    SandboxedMechanism,
    replay_path,
)
from bilevel.runtime.mechanisms.replay import read_replay
from bilevel.runtime.mechanisms.validation import synthetic_trace
from bilevel.runtime.outputs import mechanism_commands as mechanism_cli
from bilevel.runtime.sandbox import hardening

import mechanism_fixtures as fx
from mechanism_fixtures import (
    COUNTER,
    STEADY,
    mech_policy,
    our_containers,
    subprocess_factory,
)

# Shared fixtures, imported explicitly (conftest.py belongs to the lead).
make_mech = fx.make_mech
mech_client = fx.mech_client
host_secret = fx.host_secret


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
    runtime = fx.mech_runtime(mech_client)
    assert host["Runtime"] == runtime
    pids = 16 if runtime == "runc" else max(16, hardening.RUNSC_PIDS_FLOOR)
    assert host["Memory"] == 128 * 2**20 and host["PidsLimit"] == pids
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
