"""log.jsonl: structured events whose fields may quote untrusted text stay one inert JSON line each."""

from __future__ import annotations

import json
import sys

from hostile_text import HOSTILE, RAW

from bilevel.runtime import logs


def test_log_jsonl_escapes_control_characters_and_keeps_one_line_per_event(tmp_path):
    path = tmp_path / "log.jsonl"
    logs.configure(path=path)
    try:
        logs.get_logger(run_id="r1", trial_id="7").warning("mechanism_quarantined", name=HOSTILE, error=HOSTILE)
    finally:
        logs.configure()  # back to stderr: the file handle is not left as every later test's sink
    raw = path.read_text()
    for c in RAW:
        assert c not in raw
    lines = raw.splitlines()
    assert len(lines) == 1                                              # the newline is \n inside JSON
    event = json.loads(lines[0])
    assert event["name"] == HOSTILE and event["run_id"] == "r1" and event["trial_id"] == "7"


def test_without_a_log_file_events_reach_the_terminal_as_sentences_not_json(capsys, monkeypatch):
    # A command with no run log (`mechanism check`, `replay ... mechanism`): its warnings are
    # sentences on stderr, escaped; no JSON line lands among its human output.
    monkeypatch.setattr(logs, "_configured", False)
    try:
        logs.get_logger(run_id="r1").warning("mechanism_quarantined", name=HOSTILE, mech_id=3)
        out, err = capsys.readouterr()
    finally:
        logs.configure(stream=sys.__stderr__)  # not capsys's stream, which closes after this test
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("bilevel: warning: mechanism quarantined (mech_id=3, name=")
    assert not line.lstrip().startswith("{")
    for c in RAW:
        assert c not in err
