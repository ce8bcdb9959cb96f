"""The run journal: schema, trials, crash recovery, concurrent reads, mechanisms, the summary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bilevel.runtime.journal import schema as jschema
from bilevel.runtime.journal import store as jmod
from bilevel.runtime.journal.artifacts import ref_of
from bilevel.runtime.journal.store import (
    Journal,
    JournalError,
    JournalLocked,
    JournalVersionError,
)
from bilevel.runtime.journal.view import RunView


@pytest.fixture
def j(tmp_path: Path):
    journal = Journal.open(tmp_path / "run")
    journal.init_run("run-1", {"hours": 8, "task": "tinygpt"}, {"trial": {"memory_mb": 512}})
    yield journal
    journal.close()


def _ok_trial(j: Journal, iteration: int, val: float, kind: str = "proposal", kept=None) -> int:
    tid = j.start_trial(iteration=iteration, kind=kind, changes={"LR": iteration})
    j.finish_trial(tid, status="ok", val_bpb=val, training_seconds=30.0, wall_seconds=31.0,
                   peak_mem_mb=100.0, exit_code=0, kept=kept)
    return tid


def _child(code: str, *args: str) -> subprocess.Popen:
    """A separate Python process running `code` (the journal is shared through the file only)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- schema -----------------------------------------------------------------------------


def test_schema_versioned_and_newer_version_refused(tmp_path: Path):
    db = tmp_path / "journal.db"
    Journal.open(db).close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == jschema.SCHEMA_VERSION
        meta = dict(raw.execute("SELECT key, value FROM meta"))
        assert meta["schema_version"] == str(jschema.SCHEMA_VERSION)
        raw.execute(f"PRAGMA user_version = {jschema.SCHEMA_VERSION + 1}")
    for opener in (Journal.open, Journal.open_readonly):
        with pytest.raises(JournalVersionError, match=f"version {jschema.SCHEMA_VERSION + 1}, newer"):
            opener(db)

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE x (y)")
    with pytest.raises(JournalError, match="not a bilevel journal"):
        Journal.open(foreign)


def test_migrations_apply_in_order_and_a_failed_step_changes_nothing(tmp_path, monkeypatch):
    db = tmp_path / "journal.db"
    Journal.open(db).close()
    v = jschema.SCHEMA_VERSION
    bad = [*jschema.MIGRATIONS, ["CREATE TABLE extra (a)", "INSERT INTO nowhere VALUES (1)"]]
    monkeypatch.setattr(jschema, "MIGRATIONS", bad)
    monkeypatch.setattr(jschema, "SCHEMA_VERSION", v + 1)
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        Journal.open(db)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == v
        assert not raw.execute("SELECT 1 FROM sqlite_master WHERE name = 'extra'").fetchall()

    good = [*jschema.MIGRATIONS[:v], ["CREATE TABLE extra (a)", "INSERT INTO extra VALUES (7)"]]
    monkeypatch.setattr(jschema, "MIGRATIONS", good)
    with Journal.open(db) as jr:
        assert jr.schema_version() == v + 1
        assert jr._one("SELECT a FROM extra") == 7
    with Journal.open_readonly(db) as ro:  # a read-only opener never migrates, it only reads
        assert ro.schema_version() == v + 1


def test_wal_mode_and_pragmas(j: Journal):
    conn = j._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert (j.path.parent / "journal.db-wal").exists()


def test_second_writer_is_locked_out(tmp_path: Path, j: Journal):
    with pytest.raises(JournalLocked, match="another process"):
        Journal.open(j.path)
    j.close()
    Journal.open(j.path).close()  # released on close (and by the kernel on SIGKILL)


# ---- trials -----------------------------------------------------------------------------


def test_trial_inserted_running_then_finished_once(j: Journal):
    tid = j.start_trial(iteration=0, kind="baseline", changes={}, script_sha="ab" * 32)
    row = j.trial(tid)
    assert row["status"] == "running" and row["ended_at"] is None and row["attempt"] == 1
    with pytest.raises(JournalError, match="finite val_bpb"):
        j.finish_trial(tid, status="ok", val_bpb=float("nan"))
    j.finish_trial(tid, status="ok", val_bpb=1.5, training_seconds=30, exit_code=0)
    row = j.trial(tid)
    assert row["status"] == "ok" and row["val_bpb"] == 1.5 and row["ended_at"] is not None
    with pytest.raises(JournalError, match="not running"):
        j.finish_trial(tid, status="crash")
    assert j.trial(tid)["status"] == "ok"

    crash = j.start_trial(iteration=1, kind="proposal", changes={"LR": 0.1})
    j.finish_trial(crash, status="crash", val_bpb=9.9, exit_code=1)
    assert j.trial(crash)["val_bpb"] is None  # null unless ok
    with pytest.raises(JournalError, match="cannot be kept"):
        j.set_kept(crash, True)
    j.set_kept(crash, False)
    assert j.trial(crash)["kept"] is False
    with pytest.raises(JournalError, match="CHECK"):
        j.record_llm_call(level="3", purpose="p", model="m", outcome="ok")
    with pytest.raises(JournalError, match="CHECK"):
        j.add_mechanism(name="x", origin="downloaded")
    assert [t.seq for t in RunView.read(j).finished] == [0, 1]
    assert j.next_seq() == 2


def test_interrupted_trials_are_marked_and_rerun_as_new_attempts(tmp_path: Path, j: Journal):
    done = _ok_trial(j, 0, 2.0, kind="baseline")
    lost = [j.start_trial(iteration=i, kind="proposal", changes={"i": i}) for i in (1, 2)]
    j.close()  # the process "dies" with two trials running

    j2 = Journal.open(tmp_path / "run")
    assert j2.mark_running_trials_interrupted() == lost
    assert j2.mark_running_trials_interrupted() == []
    counts = RunView.read(j2).trial_counts()
    assert counts["interrupted"] == 2 and counts["running"] == 0
    assert [t.trial_id for t in RunView.read(j2).finished] == [done]  # never counted as finished
    rerun = RunView.read(j2).to_rerun
    assert [(t.seq, t.iteration, t.changes) for t in rerun] == [
        (1, 1, {"i": 1}), (2, 2, {"i": 2})]
    assert j2.events("trials_interrupted")[0]["payload"] == {"trial_ids": lost}

    again = j2.start_trial(iteration=1, kind="proposal", changes={"i": 1}, seq=1)
    assert j2.trial(again)["attempt"] == 2
    with pytest.raises(JournalError, match="iteration 2"):
        j2.start_trial(iteration=5, kind="proposal", changes={}, seq=2)
    j2.finish_trial(again, status="timeout", wall_seconds=40)
    assert [t.seq for t in RunView.read(j2).to_rerun] == [2]
    assert [t.seq for t in RunView.read(j2).finished] == [0, 1]
    j2.close()


def test_finished_trials_are_never_rerun_or_counted_twice(j: Journal):
    tid = _ok_trial(j, 0, 2.0, kind="baseline")
    seq = j.trial(tid)["seq"]
    with pytest.raises(JournalError, match="already ok"):
        j.start_trial(iteration=0, kind="baseline", changes={}, seq=seq)
    running = j.start_trial(iteration=1, kind="proposal", changes={})
    with pytest.raises(JournalError, match="already running"):
        j.start_trial(iteration=1, kind="proposal", changes={}, seq=j.trial(running)["seq"])
    # The database itself refuses a second finished attempt, not just the Python check.
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"), j.transaction():
        j._conn.execute(
            "INSERT INTO trials (seq, attempt, iteration, kind, changes, status, val_bpb,"
            " started_at, ended_at) VALUES (?, 2, 0, 'baseline', '{}', 'crash', NULL, 'x', 'y')",
            (seq,),
        )
    assert len(RunView.read(j).finished) == 1 and RunView.read(j).trial_counts()["ok"] == 1


def test_transaction_is_atomic_and_nested_block_rolls_back_alone(j: Journal):
    with pytest.raises(RuntimeError), j.transaction():
        j.start_trial(iteration=0, kind="baseline", changes={})
        raise RuntimeError("boom")
    assert j.trials() == []

    with j.transaction():
        j.event("outer")
        try:
            with j.transaction():
                j.event("inner")
                raise ValueError
        except ValueError:
            pass
    assert [e["kind"] for e in j.events()] == ["outer"]
    with pytest.raises(ValueError, match="Out of range|NaN"):
        j.event("bad", {"x": float("nan")})


# ---- concurrency and crashes ------------------------------------------------------------

WRITER = """
    import sys, time
    from bilevel.runtime.journal.store import Journal
    j = Journal.open(sys.argv[1])
    print("ready", flush=True)
    for i in range(150):
        tid = j.start_trial(iteration=i + 1, kind="proposal", changes={"i": i})
        j.finish_trial(tid, status="ok", val_bpb=2.0 - i / 1000, kept=True)
        time.sleep(0.002)
    j.close()
"""


def test_readonly_reader_runs_concurrently_with_a_writer_process(tmp_path: Path, j: Journal):
    _ok_trial(j, 0, 2.0, kind="baseline")
    j.close()
    child = _child(WRITER, str(j.path))
    assert child.stdout.readline().strip() == "ready"
    seen = []
    with Journal.open_readonly(j.path) as ro:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro._conn.execute("DELETE FROM trials")
        with pytest.raises(JournalError, match="read-only"):
            ro.event("x")
        deadline = time.monotonic() + 10
        while child.poll() is None and time.monotonic() < deadline:
            summary = RunView.read(ro).status()
            seen.append(summary["trials"]["ok"])
        assert child.wait(5) == 0, child.stderr.read()
        final = RunView.read(ro).status()
    assert final["trials"]["ok"] == 151 and final["best_val_bpb"] == pytest.approx(1.851)
    assert seen == sorted(seen), "a reader saw the count go backwards"
    assert any(1 < n < 151 for n in seen), "the reader never saw the run in progress"


def _finish_with_event(j: Journal, i: int) -> None:
    tid = j.start_trial(iteration=i, kind="proposal", changes={"i": i})
    with j.transaction():  # the trial row and its event are one unit
        j.finish_trial(tid, status="ok", val_bpb=1.0 + i)
        j.event("trial_finished", {"trial_id": tid})


@pytest.mark.parametrize("damage", ["cut:1", "cut:100", "cut:3000", "garble:60"])
def test_torn_wal_tail_recovers_to_a_consistent_prefix(tmp_path: Path, damage: str):
    live = Journal.open(tmp_path / "live")
    live.init_run("r", {}, {})
    n = 12
    for i in range(n):
        _finish_with_event(live, i)
    wal = live.path.with_name("journal.db-wal")
    assert wal.stat().st_size > 0, "nothing in the WAL: the test would be void"
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(live.path, copy / "journal.db")  # copied while the writer holds it open
    shutil.copy(wal, copy / "journal.db-wal")
    live.close()

    how, amount = damage.split(":")
    torn = copy / "journal.db-wal"
    data = torn.read_bytes()
    if how == "cut":
        data = data[: -int(amount)]
    else:
        data = data[: -int(amount)] + bytes(b ^ 0xFF for b in data[-int(amount):])
    torn.write_bytes(data)

    with Journal.open(copy) as jr:
        assert jr.integrity_check() == "ok"
        finished = RunView.read(jr).finished
        k = len(finished)
        print(f"{damage}: {k} of {n} finished trials survive")
        assert k < n, "the torn tail was not lost"
        assert k >= n - 2
        assert [t.iteration for t in finished] == list(range(k))  # a prefix, in order
        assert all(t.val_bpb == 1.0 + t.iteration and t.ended_at for t in finished)
        events = jr.events("trial_finished")
        assert [e["payload"]["trial_id"] for e in events] == [t.trial_id for t in finished]
        rest = [t for t in jr.trials() if t["status"] != "ok"]
        assert all(t["status"] == "running" and t["val_bpb"] is None for t in rest)
        assert len(rest) <= 1
        jr.start_trial(iteration=k, kind="proposal", changes={})  # and it takes writes again


KILLED = """
    import os, sys, time
    from bilevel.runtime.journal.store import Journal
    j = Journal.open(sys.argv[1])
    j._conn.execute("PRAGMA cache_size = 5")  # spill uncommitted pages into the WAL
    wal = j.path.with_name("journal.db-wal")
    with j.transaction():
        tid = j.start_trial(iteration=9, kind="proposal", changes={"doomed": True})
        j.finish_trial(tid, status="ok", val_bpb=0.1, kept=True)
        for _ in range(30):
            j.event("bulk", "x" * 20000)
        print(os.path.getsize(wal), flush=True)
        time.sleep(60)
"""


def test_sigkill_mid_transaction_leaves_none_of_it(tmp_path: Path, j: Journal):
    for i in range(3):
        _ok_trial(j, i, 2.0 - i / 10, kept=True)
    j.close()
    wal = j.path.with_name("journal.db-wal")
    before = wal.stat().st_size if wal.exists() else 0
    child = _child(KILLED, str(j.path))
    line = child.stdout.readline()
    assert line.strip().isdigit(), child.stderr.read()
    assert int(line) > before + 100_000, "uncommitted pages never reached the WAL"
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(5) == -signal.SIGKILL

    with Journal.open(j.path) as jr:  # the flock died with the process
        assert jr.integrity_check() == "ok"
        assert len(jr.trials()) == 3 and jr.events("bulk") == []
        assert RunView.read(jr).status()["best_val_bpb"] == pytest.approx(1.8)
        assert jr.mark_running_trials_interrupted() == []


# ---- mechanisms -------------------------------------------------------------------------


def test_mechanism_calls_keep_order_and_large_inputs(j: Journal, monkeypatch):
    monkeypatch.setattr(jmod, "INLINE_MAX", 1000)
    mech = j.add_mechanism(name="tabu", origin="generated", source_ref=ref_of("src"),
                           activated_at_iteration=3)
    inputs = [{"view": {"history": list(range(n))}} for n in (1, 500, 2)]
    for k, inp in enumerate(inputs):
        j.record_mechanism_call(mech_id=mech, hook="suggest", input=inp, output=[k],
                                outcome="ok", latency_ms=0.5, iteration=3 + k)
    big = j._one("SELECT input_ref FROM mechanism_calls WHERE seq = 1")
    assert big is not None and j.artifacts.exists(big)
    calls = j.mechanism_calls(mech)
    assert [c["input"] for c in calls] == inputs and [c["seq"] for c in calls] == [0, 1, 2]
    assert [c["output"] for c in calls] == [[0], [1], [2]]
    with pytest.raises(JournalError, match="FOREIGN KEY"):
        j.record_mechanism_call(mech_id=999, hook="observe", input={}, outcome="ok")


def test_status_shape(j: Journal):
    _ok_trial(j, 0, 2.0, kind="baseline")
    _ok_trial(j, 1, 1.9, kept=True)
    discarded = _ok_trial(j, 2, 1.8)
    j.set_kept(discarded, False)
    crash = j.start_trial(iteration=3, kind="proposal", changes={})
    j.finish_trial(crash, status="crash", exit_code=1, kept=False)
    lib = j.add_mechanism(name="bandit", origin="library", activated_at_iteration=0)
    gen = j.add_mechanism(name="tabu", origin="generated", activated_at_iteration=2)
    for hook in ("observe", "observe", "suggest"):
        j.record_mechanism_call(mech_id=lib, hook=hook, input={}, outcome="ok")
    j.record_mechanism_call(mech_id=gen, hook="review", input={}, outcome="timeout", error="late")
    j.quarantine_mechanism(gen, "deadline", iteration=3)
    j.record_llm_call(level="1", purpose="propose", model="m", outcome="ok",
                      tokens_in=100, tokens_out=20, usd=0.01)
    j.record_llm_call(level="2", purpose="mechanism", model="m", outcome="ok",
                      tokens_in=1000, tokens_out=500, usd=0.25)
    j.record_decision(level="1.5", kind="freeze", payload={"params": ["LR"]}, iteration=2)
    j.set_state("stopped", "budget: max_usd")

    s = RunView.read(j).status()
    json.dumps(s)
    assert s["state"] == "stopped" and s["state_reason"] == "budget: max_usd"
    assert s["trials"]["ok"] == 3 and s["trials"]["crash"] == 1 and s["trials"]["running"] == 0
    assert s["baseline_val_bpb"] == 2.0 and s["best_val_bpb"] == 1.9  # discarded 1.8 is not best
    assert s["mechanisms"] == [
        {"id": lib, "name": "bandit", "origin": "library", "state": "active", "active": True,
         "quarantined": False, "calls": {"observe": 2, "suggest": 1}},
        {"id": gen, "name": "tabu", "origin": "generated", "state": "quarantined", "active": False,
         "quarantined": True, "calls": {"review": 1}},
    ]
    # The contract's three keys; the rest (decisions per level, unusable streak) are additive.
    assert {k: s["llm"][k] for k in ("calls", "tokens", "usd")} == {"calls": 2, "tokens": 1620,
                                                                   "usd": pytest.approx(0.26)}
    with pytest.raises(JournalError, match="quarantined"):
        j.set_mechanism_active(gen, True)
    with Journal.open_readonly(j.path) as ro:
        assert RunView.read(ro).status() == s


def test_a_version_1_journal_migrates_to_record_endpoints_and_keeps_its_llm_calls(tmp_path, monkeypatch):
    db = tmp_path / "journal.db"
    released = jschema.MIGRATIONS
    monkeypatch.setattr(jschema, "MIGRATIONS", released[:1])
    monkeypatch.setattr(jschema, "SCHEMA_VERSION", 1)
    with Journal.open(db) as old:   # what bilevel wrote before the fallback chain
        old.init_run("r", {"llm": "m"}, {})
        old._write("INSERT INTO llm_calls (level, purpose, model, tokens_in, outcome, at)"
                   " VALUES ('1', 'propose', 'm', 12, 'ok', 'then')")
    monkeypatch.setattr(jschema, "MIGRATIONS", released)
    monkeypatch.setattr(jschema, "SCHEMA_VERSION", len(released))
    with Journal.open_readonly(db) as ro:   # status and report read an old run as it is, unmigrated
        assert ro.schema_version() == 1 and RunView.read(ro).llm_totals["calls"] == 1
        assert RunView.read(ro).status()["llm"]["calls"] == 1
    with Journal.open(db) as j:      # what `bilevel resume` does first
        assert j.schema_version() == len(released) >= 2
        j.record_llm_call(level="1", purpose="propose", model="m2", outcome="ok", endpoint="m2@http://b",
                          response_format="json_object+schema")
    with Journal.open_readonly(db) as ro:
        calls = ro.llm_calls()
        assert [(c["model"], c["endpoint"], c["response_format"]) for c in calls] == [
            ("m", None, None), ("m2", "m2@http://b", "json_object+schema")]
        assert ro.llm_totals()["calls"] == 2 and RunView.read(ro).run.run_id == "r"


def test_a_version_2_journal_migrates_to_code_mode_trials(tmp_path, monkeypatch):
    db = tmp_path / "journal.db"
    released = jschema.MIGRATIONS
    monkeypatch.setattr(jschema, "MIGRATIONS", released[:2])
    monkeypatch.setattr(jschema, "SCHEMA_VERSION", 2)
    with Journal.open(db) as old:   # what bilevel wrote before code mode
        old.init_run("r", {}, {})
        old._write("INSERT INTO trials (seq, attempt, iteration, kind, changes, status, val_bpb, started_at,"
                   " ended_at) VALUES (0, 1, 0, 'baseline', '{}', 'ok', 2.5, 'then', 'then')")
    monkeypatch.setattr(jschema, "MIGRATIONS", released)
    monkeypatch.setattr(jschema, "SCHEMA_VERSION", len(released))
    with Journal.open_readonly(db) as ro:   # read unmigrated: an old trial is a params-mode trial
        (t,) = RunView.read(ro).trials
        assert ro.schema_version() == 2 and t.mode is None and not t.is_code and t.val_bpb == 2.5
    with Journal.open(db) as j:
        assert j.schema_version() == len(released) >= 3
        diff = j.artifacts.put("--- a/train.py\n+++ b/train.py\n")
        tid = j.start_trial(iteration=1, kind="proposal", changes={}, mode="code", diff_ref=diff)
        j.finish_trial(tid, status="invalid", reason="causality gate: ...", gate="causality")
        tid2 = j.start_trial(iteration=2, kind="proposal", changes={}, mode="code", diff_ref=diff)
        j.finish_trial(tid2, status="ok", val_bpb=2.4, checkpoint_sha="ab" * 32)
    with Journal.open_readonly(db) as ro:
        old, bad, good = RunView.read(ro).trials
        assert (bad.mode, bad.gate, bad.diff_ref, bad.checkpoint_sha) == ("code", "causality", diff, None)
        assert good.is_code and good.checkpoint_sha == "ab" * 32 and not old.is_code
        assert ro.artifacts.get_text(good.diff_ref).startswith("--- a/train.py")
