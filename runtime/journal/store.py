"""The journal's store: one SQLite database per run (`RUN_DIR/journal.db`), and every write to it.

Why SQLite in WAL mode: an unattended run must survive SIGKILL, power loss and a torn last
write, and `bilevel status` must read it while the run is live. Every public write is its own
short transaction, so a crash loses at most the write in flight; SQLite's WAL recovery drops
an uncommitted or torn tail on the next open.

`synchronous=FULL`: with WAL, NORMAL never corrupts but can lose the last commits on power
loss. The journal is what tells a resume that a trial finished or that an LLM call was paid
for; losing that means re-running a trial or paying twice. FULL costs one WAL fsync per
commit, and commits are a handful per trial (trials take minutes), so durability wins.

The store's reads return decoded rows for the write side and for `RunView`; every reader of a
run's facts (status, report, display, ablation, resume) goes through `RunView` (view.py).
The schema and its migrations are in schema.py.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bilevel.runtime.journal.artifacts import ArtifactStore
from bilevel.runtime.journal.errors import JournalError, JournalLocked, JournalVersionError
from bilevel.runtime.journal.schema import (
    ENDINGS,
    RUN_STATES,
    TRIAL_KINDS,
    check_version,
    migrate,
    now,
    sql_in,
)
from bilevel.runtime.logs import get_logger
from bilevel.runtime.vocabulary import FINISHED, RERUN

DB_NAME = "journal.db"
BUSY_TIMEOUT_S = 10.0
INLINE_MAX = 256 * 1024  # larger hook inputs/outputs go to the artifact store

__all__ = ["DB_NAME", "Journal", "JournalError", "JournalLocked", "JournalVersionError"]


def _dumps(value: Any) -> str:
    """Strict JSON: what the journal holds must load anywhere, so NaN and objects are refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _db_path(path: Path | str) -> Path:
    """A `.db` path or an existing file is the journal itself; anything else is a run dir."""
    path = Path(path)
    return path if path.suffix == ".db" or path.is_file() else path / DB_NAME


class Journal:
    """One run's journal. Open with `Journal.open` (writer) or `Journal.open_readonly`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool, lock_fd: int | None
                 ) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._lock_fd = lock_fd
        self._depth = 0
        self.artifacts = ArtifactStore(path.parent / "artifacts")

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, lock: bool = True, check: bool = True) -> Journal:
        """Open or create the journal for writing, migrating an older schema.

        `path` is the run directory or the `.db` file. `lock` takes an exclusive flock
        beside the db so two writers (say, two `bilevel resume`) cannot interleave; SIGKILL
        releases it. `check` runs `PRAGMA quick_check` and refuses a damaged journal.
        """
        path = _db_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(path) if lock else None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                _configure_writer(conn)
                migrate(conn, path)
                if check:
                    verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
                    if verdict != "ok":
                        raise JournalError(f"journal {path} is damaged: {verdict}")
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(conn, path, readonly=False, lock_fd=lock_fd)

    @classmethod
    def open_readonly(cls, path: Path | str) -> Journal:
        """Open for reading only (URI `mode=ro`); works while a writer in another process runs."""
        path = _db_path(path)
        if not path.is_file():
            raise JournalError(f"no journal at {path}")
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            raise JournalError(f"cannot read journal {path}: {e}") from e
        try:
            check_version(conn, path, version, readonly=True)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, readonly=True, lock_fd=None)

    def close(self) -> None:
        self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions --------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Journal]:
        """Group writes atomically. Nested use becomes a savepoint, undone alone if it raises."""
        if self.readonly:
            raise JournalError("journal is open read-only")
        conn = self._conn
        if self._depth:
            name = f"sp{self._depth}"
            conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            else:
                conn.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    def _write(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        """One statement, one transaction; a broken rule (CHECK, FOREIGN KEY) is a JournalError."""
        try:
            with self.transaction():
                return self._conn.execute(sql, params)
        except sqlite3.IntegrityError as e:
            raise JournalError(f"journal refused the write: {e}") from e

    def _rows(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        cur = self._conn.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def _one(self, sql: str, params: tuple | dict = ()) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def integrity_check(self) -> str:
        """'ok', or SQLite's description of what is damaged."""
        return self._one("PRAGMA integrity_check")

    def schema_version(self) -> int:
        return self._one("PRAGMA user_version")

    # ---- run -----------------------------------------------------------------------------

    def init_run(self, run_id: str, config: dict, policy: dict) -> None:
        """Record the run once, in state `running`."""
        at = now()
        with self.transaction():
            existing = self._one("SELECT run_id FROM run")
            if existing is not None:
                raise JournalError(f"journal already holds run {existing!r}")
            self._conn.execute(
                "INSERT INTO run (run_id, created_at, config, policy, state, updated_at)"
                " VALUES (?, ?, ?, ?, 'running', ?)",
                (run_id, at, _dumps(config), _dumps(policy), at),
            )

    def run(self) -> dict | None:
        """The run row with config and policy decoded, or None before `init_run`."""
        rows = self._rows("SELECT * FROM run")
        if not rows:
            return None
        run = rows[0]
        del run["singleton"]
        run["config"] = json.loads(run["config"])
        run["policy"] = json.loads(run["policy"])
        return run

    def set_state(self, state: str, reason: str | None = None) -> None:
        if state not in RUN_STATES:
            raise JournalError(f"unknown run state {state!r}; one of {RUN_STATES}")
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE run SET state = ?, state_reason = ?, updated_at = ?",
                (state, reason, now()),
            )
            if cur.rowcount != 1:
                raise JournalError("no run recorded yet")
            self._event("run_state", {"state": state, "reason": reason})

    def update_config(self, config: dict, note: str = "") -> None:
        """Replace the run's config (a resume with allowed changes), journaling the change."""
        with self.transaction():
            old = self.run()
            if old is None:
                raise JournalError("no run recorded yet")
            self._conn.execute(
                "UPDATE run SET config = ?, updated_at = ?", (_dumps(config), now())
            )
            self._event("config_changed", {"old": old["config"], "new": config, "note": note})

    # ---- trials --------------------------------------------------------------------------

    def next_seq(self) -> int:
        """The seq a new logical trial gets: one past the highest seen, 0 for the first."""
        return self._one("SELECT COALESCE(MAX(seq) + 1, 0) FROM trials")

    def start_trial(
        self,
        *,
        iteration: int,
        kind: str,
        changes: dict,
        hypothesis: str | None = None,
        script_sha: str | None = None,
        seq: int | None = None,
        mode: str | None = None,
        diff_ref: str | None = None,
    ) -> int:
        """Insert a `running` trial before its container starts; returns its trial_id.

        `seq=None` starts a new logical trial. Passing the seq of an interrupted one reruns it
        as the next attempt; a seq already finished or running is refused.
        """
        if kind not in TRIAL_KINDS:
            raise JournalError(f"unknown trial kind {kind!r}; one of {TRIAL_KINDS}")
        with self.transaction():
            if seq is None:
                seq, attempt = self.next_seq(), 1
            else:
                prior = self._rows(
                    "SELECT status, iteration FROM trials WHERE seq = ? ORDER BY attempt", (seq,)
                )
                done = [p["status"] for p in prior if p["status"] not in RERUN]
                if done:
                    raise JournalError(f"trial seq {seq} is already {done[0]}; not run again")
                if prior and prior[0]["iteration"] != iteration:
                    raise JournalError(
                        f"trial seq {seq} belongs to iteration {prior[0]['iteration']}, "
                        f"not {iteration}"
                    )
                attempt = len(prior) + 1
            cur = self._conn.execute(
                "INSERT INTO trials (seq, attempt, iteration, kind, changes, hypothesis,"
                " script_sha, status, started_at, mode, diff_ref) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (seq, attempt, iteration, kind, _dumps(changes), hypothesis, script_sha, now(), mode, diff_ref),
            )
            return cur.lastrowid

    def finish_trial(
        self,
        trial_id: int,
        *,
        status: str,
        val_bpb: float | None = None,
        training_seconds: float | None = None,
        wall_seconds: float | None = None,
        peak_mem_mb: float | None = None,
        exit_code: int | None = None,
        log_ref: str | None = None,
        reason: str | None = None,
        kept: bool | None = None,
        checkpoint_sha: str | None = None,
        gate: str | None = None,
    ) -> None:
        """Record a running trial's end, once. `val_bpb` must be a finite number iff `ok`.
        Code mode adds the checkpoint's sha256 and, for an invalid trial, the gate it failed."""
        if status not in ENDINGS:
            raise JournalError(f"a trial ends as one of {ENDINGS}, not {status!r}")
        if status == "ok" and (val_bpb is None or not math.isfinite(val_bpb)):
            raise JournalError(f"an ok trial needs a finite val_bpb, got {val_bpb!r}")
        if status != "ok":
            val_bpb = None
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE trials SET status = ?, val_bpb = ?, training_seconds = ?,"
                " wall_seconds = ?, peak_mem_mb = ?, exit_code = ?, log_ref = ?, reason = ?,"
                " kept = ?, ended_at = ?, checkpoint_sha = ?, gate = ? WHERE trial_id = ? AND status = 'running'",
                (status, val_bpb, training_seconds, wall_seconds, peak_mem_mb, exit_code,
                 log_ref, reason, None if kept is None else int(kept), now(), checkpoint_sha, gate, trial_id),
            )
            if cur.rowcount != 1:
                status_now = self._one("SELECT status FROM trials WHERE trial_id = ?", (trial_id,))
                raise JournalError(f"trial {trial_id} is not running (status {status_now!r})")

    def set_kept(self, trial_id: int, kept: bool) -> None:
        """Record the keep/discard decision for a finished trial."""
        cur = self._write(
            f"UPDATE trials SET kept = ? WHERE trial_id = ? AND status IN {sql_in(FINISHED)}"
            " AND (status = 'ok' OR NOT ?)",
            (int(kept), trial_id, int(kept)),
        )
        if cur.rowcount != 1:
            raise JournalError(f"trial {trial_id} cannot be kept: only a finished ok trial can")

    def record_iteration(self, record: dict) -> None:
        """An iteration's verdict and its record, in one transaction: a crash leaves both or
        neither, so the trials' `kept` and the iteration records never disagree on resume."""
        with self.transaction():
            if record.get("kept"):
                self.set_kept(record["trial_id"], True)
            self._event("iteration", record)

    def mark_running_trials_interrupted(self) -> list[int]:
        """At resume: trials left `running` by a dead process become `interrupted`."""
        with self.transaction():
            ids = [r[0] for r in self._conn.execute(
                "SELECT trial_id FROM trials WHERE status = 'running' ORDER BY trial_id")]
            if ids:
                self._conn.execute(
                    "UPDATE trials SET status = 'interrupted' WHERE status = 'running'")
                self._event("trials_interrupted", {"trial_ids": ids})
        if ids:
            get_logger().warning("journal.trials_interrupted", trial_ids=ids)
        return ids

    def trial(self, trial_id: int) -> dict | None:
        rows = self._trials("WHERE trial_id = ?", (trial_id,))
        return rows[0] if rows else None

    def trials(self) -> list[dict]:
        """Every attempt, in the order they were started."""
        return self._trials("ORDER BY trial_id")

    def _trials(self, where: str, params: tuple = ()) -> list[dict]:
        rows = self._rows(f"SELECT * FROM trials {where}", params)
        for row in rows:
            row["changes"] = json.loads(row["changes"])
            row["kept"] = None if row["kept"] is None else bool(row["kept"])
        return rows

    # ---- LLM calls -----------------------------------------------------------------------

    def record_llm_call(
        self,
        *,
        level: str,
        purpose: str,
        model: str,
        outcome: str,
        prompt_sha256: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        usd: float = 0.0,
        latency_s: float | None = None,
        attempts: int = 1,
        error: str | None = None,
        iteration: int | None = None,
        endpoint: str | None = None,
        response_format: str | None = None,
    ) -> int:
        cur = self._write(
            "INSERT INTO llm_calls (level, purpose, model, prompt_sha256, tokens_in, tokens_out,"
            " usd, latency_s, outcome, attempts, error, iteration, at, endpoint, response_format)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (level, purpose, model, prompt_sha256, tokens_in, tokens_out, usd, latency_s,
             outcome, attempts, error, iteration, now(), endpoint, response_format),
        )
        return cur.lastrowid

    def llm_totals(self) -> dict[str, Any]:
        """`{calls, tokens, usd}` spent so far: what the budget checks read."""
        calls, tokens, usd = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(tokens_in + tokens_out), 0), COALESCE(SUM(usd), 0)"
            " FROM llm_calls"
        ).fetchone()
        return {"calls": calls, "tokens": tokens, "usd": float(usd)}

    def llm_calls(self) -> list[dict]:
        """Every LLM call's row, in order (older journals' rows have NULL endpoint and format)."""
        return self._rows("SELECT * FROM llm_calls ORDER BY id")

    def llm_by_level(self) -> list[dict]:
        """Calls, failed calls, tokens in and out, USD and purposes, per level."""
        return self._rows(
            "SELECT level, COUNT(*) AS calls, SUM(outcome != 'ok') AS failed,"
            " COALESCE(SUM(tokens_in), 0) AS tokens_in, COALESCE(SUM(tokens_out), 0) AS tokens_out,"
            " COALESCE(SUM(usd), 0) AS usd, GROUP_CONCAT(DISTINCT purpose) AS purposes"
            " FROM llm_calls GROUP BY level ORDER BY CAST(level AS REAL)"
        )

    # ---- mechanisms ----------------------------------------------------------------------

    def add_mechanism(
        self,
        *,
        name: str,
        origin: str,
        source_ref: str | None = None,
        activated_at_iteration: int | None = None,
        active: bool = True,
    ) -> int:
        cur = self._write(
            "INSERT INTO mechanisms (name, origin, source_ref, activated_at_iteration, active,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (name, origin, source_ref, activated_at_iteration, int(active), now()),
        )
        return cur.lastrowid

    def set_mechanism_active(self, mech_id: int, active: bool) -> None:
        cur = self._write(
            "UPDATE mechanisms SET active = ? WHERE mech_id = ? AND NOT quarantined",
            (int(active), mech_id),
        )
        if cur.rowcount != 1:
            raise JournalError(f"mechanism {mech_id} is unknown or quarantined")

    def quarantine_mechanism(self, mech_id: int, reason: str, iteration: int | None = None) -> None:
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE mechanisms SET active = 0, quarantined = 1, quarantine_reason = ?,"
                " quarantined_at_iteration = ? WHERE mech_id = ?",
                (reason, iteration, mech_id),
            )
            if cur.rowcount != 1:
                raise JournalError(f"no mechanism {mech_id}")
            self._event("mechanism_quarantined", {"mech_id": mech_id, "reason": reason})

    def mechanisms(self) -> list[dict]:
        rows = self._rows("SELECT * FROM mechanisms ORDER BY mech_id")
        for row in rows:
            row["active"], row["quarantined"] = bool(row["active"]), bool(row["quarantined"])
        return rows

    def record_mechanism_call(
        self,
        *,
        mech_id: int,
        hook: str,
        input: Any,
        output: Any = None,
        outcome: str,
        error: str | None = None,
        latency_ms: float | None = None,
        iteration: int | None = None,
    ) -> int:
        """Journal one hook call; its input is what a replay re-feeds, so it is stored whole."""
        in_text, in_ref = self._pack(input)
        out_text, out_ref = self._pack(output)
        with self.transaction():
            seq = self._one(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM mechanism_calls WHERE mech_id = ?",
                (mech_id,),
            )
            cur = self._write(
                "INSERT INTO mechanism_calls (mech_id, seq, hook, input, input_ref, output,"
                " output_ref, outcome, error, latency_ms, iteration, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (mech_id, seq, hook, in_text, in_ref, out_text, out_ref, outcome, error,
                 latency_ms, iteration, now()),
            )
            return cur.lastrowid

    def mechanism_call_counts(self) -> dict[int, dict[str, int]]:
        """mech_id -> hook -> journaled calls."""
        calls: dict[int, dict[str, int]] = {}
        for mech_id, hook, n in self._conn.execute(
            "SELECT mech_id, hook, COUNT(*) FROM mechanism_calls GROUP BY mech_id, hook"
        ):
            calls.setdefault(mech_id, {})[hook] = n
        return calls

    def mechanism_calls(self, mech_id: int) -> list[dict]:
        """A mechanism's calls in the order made, inputs and outputs decoded: a replay's script."""
        rows = self._rows(
            "SELECT * FROM mechanism_calls WHERE mech_id = ? ORDER BY seq", (mech_id,)
        )
        for row in rows:
            row["input"] = self._unpack(row.pop("input"), row.pop("input_ref"))
            row["output"] = self._unpack(row.pop("output"), row.pop("output_ref"))
        return rows

    def mechanism_call_refs(self) -> list[dict]:
        """The artifact refs of large hook inputs and outputs: {mech_id, seq, hook, field, ref}."""
        out = []
        for row in self._rows("SELECT mech_id, seq, hook, input_ref, output_ref FROM mechanism_calls"
                              " WHERE input_ref IS NOT NULL OR output_ref IS NOT NULL ORDER BY mech_id, seq"):
            for field in ("input", "output"):
                if row[f"{field}_ref"]:
                    out.append({"mech_id": row["mech_id"], "seq": row["seq"], "hook": row["hook"],
                                "field": field, "ref": row[f"{field}_ref"]})
        return out

    def _pack(self, value: Any) -> tuple[str | None, str | None]:
        """(inline JSON, None), or (None, artifact ref) when large. The artifact is written
        before the row, so a ref in the journal always names a file that exists."""
        text = _dumps(value)
        if len(text) <= INLINE_MAX:
            return text, None
        return None, self.artifacts.put(text)

    def _unpack(self, text: str | None, ref: str | None) -> Any:
        if ref is not None:
            return json.loads(self.artifacts.get_text(ref))
        return None if text is None else json.loads(text)

    # ---- decisions and events ------------------------------------------------------------

    def record_decision(self, *, level: str, kind: str, payload: Any, iteration: int | None = None
                        ) -> int:
        cur = self._write(
            "INSERT INTO decisions (level, iteration, kind, payload, at) VALUES (?, ?, ?, ?, ?)",
            (level, iteration, kind, _dumps(payload), now()),
        )
        return cur.lastrowid

    def decisions(self) -> list[dict]:
        rows = self._rows("SELECT * FROM decisions ORDER BY id")
        for row in rows:
            row["payload"] = json.loads(row["payload"])
        return rows

    def event(self, kind: str, payload: Any = None) -> int:
        with self.transaction():
            return self._event(kind, payload)

    def _event(self, kind: str, payload: Any) -> int:
        cur = self._conn.execute(
            "INSERT INTO events (at, kind, payload) VALUES (?, ?, ?)",
            (now(), kind, _dumps(payload)),
        )
        return cur.lastrowid

    def events(self, kind: str | None = None) -> list[dict]:
        where, params = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = self._rows(f"SELECT * FROM events {where} ORDER BY id", params)
        for row in rows:
            row["payload"] = json.loads(row["payload"])
        return rows


# ---- opening helpers ---------------------------------------------------------------------


def _take_lock(db: Path) -> int:
    fd = os.open(db.with_name(db.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalLocked(
            f"journal {db} is open for writing by another process (is the run still live?)"
        ) from None
    return fd


def _configure_writer(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise JournalError(f"journal could not switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL file after checkpoints
