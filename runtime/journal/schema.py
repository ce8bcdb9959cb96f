"""The journal's schema: its tables, the migrations that build them, and the version checks.

Each migration step is a list of statements applied in order in one transaction; a released step
is never edited, a new one is appended, and the schema version is the number of steps applied.
A trial is inserted as `running` before its container starts and updated once at its end. A
logical trial is its `seq`; a rerun after a crash is a new `attempt` of the same seq. Partial
unique indexes allow at most one finished and one running attempt per seq, so "distinct
finished trials" is `status IN FINISHED` and nothing is counted twice.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from bilevel.runtime.journal.errors import JournalError, JournalVersionError
from bilevel.runtime.logs import get_logger
from bilevel.runtime.vocabulary import FINISHED, RERUN, HookOutcome, RunState, TrialKind, TrialStatus

APPLICATION = "bilevel"

# The CHECK constraints spell out each vocabulary's values; the text of a released step must
# never change, and these tuples give exactly the strings the first step was written with.
RUN_STATES = tuple(s.value for s in RunState)
TRIAL_KINDS = tuple(k.value for k in TrialKind)
TRIAL_STATUSES = tuple(s.value for s in (TrialStatus.RUNNING, *FINISHED, *RERUN))
HOOK_OUTCOMES = tuple(o.value for o in HookOutcome)
ENDINGS = tuple(s.value for s in (*FINISHED, TrialStatus.INFRA))  # what `finish_trial` may record


def sql_in(values: tuple[str, ...]) -> str:
    """`('a', 'b')`: a vocabulary as an SQL list."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# Each step is a list of statements, applied in order in one transaction; never edit a
# released step, append a new one. The schema version is the number of steps applied.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE run (
            run_id TEXT PRIMARY KEY,
            singleton INTEGER NOT NULL DEFAULT 1 UNIQUE CHECK (singleton = 1),
            created_at TEXT NOT NULL,
            config TEXT NOT NULL,
            policy TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN {sql_in(RUN_STATES)}),
            state_reason TEXT,
            updated_at TEXT NOT NULL)""",
        f"""CREATE TABLE trials (
            trial_id INTEGER PRIMARY KEY AUTOINCREMENT,
            seq INTEGER NOT NULL CHECK (seq >= 0),
            attempt INTEGER NOT NULL CHECK (attempt >= 1),
            iteration INTEGER NOT NULL CHECK (iteration >= 0),
            kind TEXT NOT NULL CHECK (kind IN {sql_in(TRIAL_KINDS)}),
            changes TEXT NOT NULL,
            hypothesis TEXT,
            script_sha TEXT,
            status TEXT NOT NULL CHECK (status IN {sql_in(TRIAL_STATUSES)}),
            reason TEXT,
            val_bpb REAL,
            training_seconds REAL,
            wall_seconds REAL,
            peak_mem_mb REAL,
            exit_code INTEGER,
            log_ref TEXT,
            kept INTEGER CHECK (kept IN (0, 1)),
            started_at TEXT NOT NULL,
            ended_at TEXT,
            UNIQUE (seq, attempt),
            CHECK ((status = 'ok') = (val_bpb IS NOT NULL)),
            CHECK (kept IS NOT 1 OR status = 'ok'),
            CHECK ((status IN ('running', 'interrupted')) = (ended_at IS NULL)))""",
        f"CREATE UNIQUE INDEX trials_one_finished ON trials (seq) WHERE status IN {sql_in(FINISHED)}",
        "CREATE UNIQUE INDEX trials_one_running ON trials (seq) WHERE status = 'running'",
        "CREATE INDEX trials_status ON trials (status)",
        """CREATE TABLE llm_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            level TEXT NOT NULL CHECK (level IN ('1', '1.5', '2')),
            purpose TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_sha256 TEXT,
            tokens_in INTEGER NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
            tokens_out INTEGER NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
            usd REAL NOT NULL DEFAULT 0 CHECK (usd >= 0),
            latency_s REAL,
            outcome TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            error TEXT,
            iteration INTEGER,
            at TEXT NOT NULL)""",
        """CREATE TABLE mechanisms (
            mech_id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            origin TEXT NOT NULL CHECK (origin IN ('library', 'generated')),
            source_ref TEXT,
            activated_at_iteration INTEGER,
            active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
            quarantined INTEGER NOT NULL DEFAULT 0 CHECK (quarantined IN (0, 1)),
            quarantine_reason TEXT,
            quarantined_at_iteration INTEGER,
            created_at TEXT NOT NULL,
            CHECK (NOT (active AND quarantined)))""",
        f"""CREATE TABLE mechanism_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            mech_id INTEGER NOT NULL REFERENCES mechanisms (mech_id),
            seq INTEGER NOT NULL,
            hook TEXT NOT NULL,
            input TEXT,
            input_ref TEXT,
            output TEXT,
            output_ref TEXT,
            outcome TEXT NOT NULL CHECK (outcome IN {sql_in(HOOK_OUTCOMES)}),
            error TEXT,
            latency_ms REAL,
            iteration INTEGER,
            at TEXT NOT NULL,
            UNIQUE (mech_id, seq),
            CHECK ((input IS NULL) <> (input_ref IS NULL)))""",
        """CREATE TABLE decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            level TEXT NOT NULL CHECK (level IN ('1.5', '2')),
            iteration INTEGER,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            at TEXT NOT NULL)""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL)""",
    ],
    # 2: which endpoint answered each LLM call (a fallback chain), and how JSON was asked for.
    [
        "ALTER TABLE llm_calls ADD COLUMN endpoint TEXT",
        "ALTER TABLE llm_calls ADD COLUMN response_format TEXT",
    ],
    # 3: code mode. Which mode a trial ran in (NULL: params, as every trial of an older run), the
    # artifact ref of its diff against the incumbent, its checkpoint's sha256, and the gate an
    # invalid code-mode trial failed.
    [
        "ALTER TABLE trials ADD COLUMN mode TEXT",
        "ALTER TABLE trials ADD COLUMN diff_ref TEXT",
        "ALTER TABLE trials ADD COLUMN checkpoint_sha TEXT",
        "ALTER TABLE trials ADD COLUMN gate TEXT",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def now() -> str:
    """A timestamp as the journal writes it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_version(conn: sqlite3.Connection, path: Path, version: int, readonly: bool) -> None:
    if version > SCHEMA_VERSION:
        raise JournalVersionError(
            f"journal {path} has schema version {version}, newer than this bilevel's "
            f"{SCHEMA_VERSION}; upgrade bilevel to open it"
        )
    if version == 0:
        tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise JournalError(f"{path} is an SQLite database but not a bilevel journal")
        if readonly:
            raise JournalError(f"journal {path} is empty (the run has not initialized it yet)")
        return
    app = conn.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
    if app is None or app[0] != APPLICATION:
        raise JournalError(f"{path} is an SQLite database but not a bilevel journal")
    # An older journal opened read-only is read as it is, never migrated: `status`, `report` and
    # `replay` of a run made before an upgrade work and change nothing in its folder (the readers
    # select no column a later step added); a writer (`bilevel resume`) migrates it first.


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply pending steps in one transaction, re-reading the version under the write lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        check_version(conn, path, version, readonly=False)
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION)),
                 (f"migrated_to_{SCHEMA_VERSION}_at", now())],
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if version < SCHEMA_VERSION:
        get_logger().info("journal.migrated", path=path.name, old=version, new=SCHEMA_VERSION)

