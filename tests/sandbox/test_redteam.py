"""The red-team suite: each file in tests/sandbox/redteam/attacks is one escape attempt.

Every attack runs twice: through the whole validation pipeline, and straight into a sandbox
with the host's AST policy skipped, so each layer is shown to hold on its own (invariant 3).
Each test asserts what did NOT happen on the host (no marker file, no secret in any output,
no connection to a loopback listener, the host process and its environment unharmed, no
leaked container) and that the attempt was refused at the stage its file names, with a reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from bilevel.runtime.mechanisms.validation import smoke_test, validate

import mechanism_fixtures as fx
from mechanism_fixtures import (
    COUNTER,
    SECRET_NAME,
    dump,
    mech_policy,
    our_containers,
)

# Shared fixtures, imported explicitly (conftest.py belongs to the lead).
make_mech = fx.make_mech
mech_client = fx.mech_client
host_secret = fx.host_secret

ATTACKS = sorted((Path(__file__).parent / "redteam" / "attacks").glob("*.py"))


def test_suite_is_large_enough():
    assert len(ATTACKS) >= 40


def expectation(text: str) -> tuple[str, str]:
    """`# expect: <pipeline stage>; <sandbox-only outcome>` from the attack's header."""
    for line in text.splitlines()[:3]:
        if line.startswith("# expect:"):
            stage, direct = (p.strip() for p in line.split(":", 1)[1].split(";"))
            return stage, direct
    raise AssertionError("attack file without an '# expect:' line")


def direct_run(make_mech, source: str) -> tuple[str, str, object]:
    """Load and smoke-test in a sandbox with stage 1 skipped: (label, reason, mechanism)."""
    mech = make_mech(source, mech_id="direct", start=False)
    loaded = mech.start()
    if not loaded.ok:
        label = loaded.stage if loaded.outcome == "error" else loaded.outcome
        return label, loaded.error or "", mech
    _outputs, failure, _printed = smoke_test(mech)
    if not mech.quarantined:
        return "accepted", "", mech
    return mech.quarantine_info["outcome"], failure or "", mech


@pytest.mark.docker
@pytest.mark.parametrize("path", ATTACKS, ids=lambda p: p.stem)
def test_attack(path, tmp_path, loopback_listener, host_secret, make_mech, mech_client):
    marker = tmp_path / "marker"
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("intact")
    env_before = dict(os.environ)
    source = (path.read_text().replace("MARKER_PATH", str(marker))
              .replace("LOOPBACK_PORT", str(loopback_listener.port))
              .replace("SECRET_NAME", SECRET_NAME))
    want_stage, want_direct = expectation(source)

    verdict = validate(source, mech_policy(), name=path.stem)
    direct, direct_reason, mech = direct_run(make_mech, source)

    # The attempt was refused, at the stage its file names, with a reason.
    assert not verdict.accepted, f"{path.stem} was accepted: {verdict.to_json()}"
    assert verdict.stage == want_stage, (verdict.stage, verdict.reason)
    assert verdict.reason
    assert direct == want_direct, (direct, direct_reason)
    assert direct_reason or mech.quarantine_info
    if verdict.stage == "smoke":
        assert want_direct in verdict.reason, verdict.reason

    # What did not happen on the host.
    assert not marker.exists(), "the attack wrote the marker file on the host"
    assert loopback_listener.accepted == [], "the attack reached the host's loopback"
    seen = dump(verdict.to_json()) + direct_reason + dump(mech.quarantine_info)
    seen += json.dumps([asdict(r) for r in mech.records], default=str)
    assert host_secret not in seen, "the host's secret leaked into an output"
    assert sentinel.read_text() == "intact"
    assert dict(os.environ) == env_before
    mech.close()
    assert our_containers(mech_client) == [], "a sandbox container was left behind"


@pytest.mark.docker
def test_the_red_team_runs_under_runsc_where_it_works(make_mech, mech_client):
    """Says which wall the red team met: runsc where it works, else a skip that gives the reason."""
    from bilevel.runtime.sandbox import runtimes

    status = runtimes.runsc_status(mech_client, mech_policy())
    if not status.works:
        pytest.skip(f"runsc cannot run here, so the red team ran under runc: {status.detail}")
    m = make_mech(COUNTER)
    c = mech_client.containers.get(m.transport.container.id)
    assert c.attrs["HostConfig"]["Runtime"] == "runsc"
    assert m.call("observe", {"val_bpb": 1.0}).outcome == "ok"
