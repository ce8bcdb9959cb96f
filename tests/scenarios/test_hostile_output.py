"""Hostile text on the terminal commands, end to end through the CLI: `bilevel trial` (a script
that prints escape sequences), `mechanism check` (a mechanism whose name, output and prints are
hostile), `status`, and `replay` (a mechanism named with escape sequences). Nothing raw comes out."""

from __future__ import annotations

import json
import subprocess

import pytest
from hostile_text import HOSTILE, assert_terminal_safe, hostile_journal

from bilevel_cli import BILEVEL


def bilevel(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*BILEVEL, *args], capture_output=True, text=True, timeout=timeout)


def test_status_shows_hostile_reasons_and_names_escaped(tmp_path):
    run = tmp_path / "run"
    hostile_journal(run)
    r = bilevel("status", str(run))
    assert r.returncode == 0, r.stderr
    assert_terminal_safe(r.stdout)
    as_json = json.loads(bilevel("status", str(run), "--json").stdout)   # --json: JSON escapes them
    assert as_json["mechanisms"][0]["name"] == HOSTILE


@pytest.mark.docker
def test_trial_log_tail_and_reason_reach_the_terminal_escaped(tmp_path):
    script = tmp_path / "hostile.py"
    script.write_text(f"import sys\nprint({HOSTILE!r})\nsys.stdout.flush()\nraise SystemExit({HOSTILE!r})\n")
    r = bilevel("trial", "--script", str(script), "--budget", "5", "--out", str(tmp_path / "t"))
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "pwned-title" in r.stdout                                    # the log tail is shown ...
    assert_terminal_safe(r.stdout)                                      # ... escaped
    for c in ("\x1b", "\x07", "\x9b"):
        assert c not in r.stderr


HOSTILE_MECH = f'''
class Mechanism:
    name = {HOSTILE[:60]!r}

    def context(self, view):
        print({HOSTILE!r})
        return [{{"title": {HOSTILE[:70]!r}, "text": {HOSTILE!r}}}]
'''


@pytest.mark.docker
def test_mechanism_check_shows_hostile_names_prints_and_outputs_escaped(tmp_path):
    path = tmp_path / "hostile_mech.py"
    path.write_text(HOSTILE_MECH)
    r = bilevel("mechanism", "check", str(path))
    assert "pwned-title" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert_terminal_safe(r.stdout)
    assert not [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith('{"')]  # human mode: no JSON log
    for c in ("\x1b", "\x07"):
        assert c not in r.stderr


@pytest.mark.docker
def test_replay_shows_a_hostile_mechanism_name_escaped(tmp_path):
    run = tmp_path / "run"
    (run / "mechanisms").mkdir(parents=True)
    header = {"mech_id": 1, "name": HOSTILE, "seed": 1, "limits": {},
              "source": "class Mechanism:\n    name = 'x'\n\n    def observe(self, record):\n        pass\n"}
    (run / "mechanisms" / "1.replay.jsonl").write_text(json.dumps(header) + "\n")
    r = bilevel("replay", str(run), "mechanism", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "pwned-title" in r.stdout
    assert_terminal_safe(r.stdout)
    assert not [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith('{"')]  # human mode: no JSON log
