"""Schema of a colony's ``data/progress.db`` (SPEC B 7): connections, tables, indexes, audit triggers.

The four SPEC tables are a compatibility contract shared with the reference system, so apiary only
ever adds to them (missing columns of an older file, new tables, triggers), never removes or renames.
Its own state lives in ``apiary_task_events``, filled by triggers so that every status change is
recorded in the same transaction as the change, whoever writes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

SCHEMA_VERSION: Final = 1
TASK_STATUSES: Final = ("pending", "claimed", "in_progress", "done", "failed")
STEP_STATUSES: Final = ("pending", "in_progress", "done")
ACTIVE_STATUSES: Final = ("claimed", "in_progress")

# UTC ISO to the second, as seeding writes it; evaluated by SQLite so one clock rules all stamps.
ISO_SECONDS_SQL: Final = "strftime('%Y-%m-%dT%H:%M:%S+00:00', :now)"

# (name, declaration) per table, in SPEC order; reused to add columns missing from an older file.
_COLUMNS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "tasks": (
        ("id", "TEXT PRIMARY KEY"),
        ("seq", "INTEGER"),
        ("priority", "INTEGER NOT NULL DEFAULT 0"),
        ("goal", "TEXT NOT NULL"),
        ("payload", "TEXT"),
        ("status", "TEXT NOT NULL DEFAULT 'pending'"),
        ("worker_id", "TEXT"),
        ("claim_token", "TEXT"),
        ("claimed_at", "TEXT"),
        ("started_at", "TEXT"),
        ("completed_at", "TEXT"),
        ("created_at", "TEXT NOT NULL"),
        ("updated_at", "TEXT NOT NULL"),
        ("retry_count", "INTEGER NOT NULL DEFAULT 0"),
        ("max_retries", "INTEGER NOT NULL DEFAULT 3"),
        ("last_error", "TEXT"),
        ("parent_task_id", "TEXT REFERENCES tasks(id) ON DELETE SET NULL"),
        ("source", "TEXT"),
    ),
    "steps": (
        ("id", "TEXT PRIMARY KEY"),
        ("task_id", "TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE"),
        ("seq", "INTEGER NOT NULL"),
        ("title", "TEXT NOT NULL"),
        ("detail", "TEXT"),
        ("status", "TEXT NOT NULL DEFAULT 'pending'"),
        ("evidence", "TEXT"),
        ("worker_id", "TEXT"),
        ("started_at", "TEXT"),
        ("completed_at", "TEXT"),
    ),
    "sop_checklist": (
        ("id", "TEXT PRIMARY KEY"),
        ("task_id", "TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE"),
        ("key", "TEXT NOT NULL"),
        ("description", "TEXT NOT NULL"),
        ("required", "INTEGER NOT NULL DEFAULT 1"),
        ("done_at", "TEXT"),
        ("done_by", "TEXT"),
        ("note", "TEXT"),
    ),
    "colony_meta": (
        ("key", "TEXT PRIMARY KEY"),
        ("value", "TEXT NOT NULL"),
        ("updated_at", "TEXT NOT NULL"),
    ),
}
_TABLE_CONSTRAINTS: Final = {"steps": ("UNIQUE(task_id, seq)",), "sop_checklist": ("UNIQUE(task_id, key)",)}

SPEC_TABLES: Final = tuple(_COLUMNS)
SPEC_INDEXES: Final = (
    "idx_tasks_claimable",
    "idx_steps_task_seq",
    "idx_sop_required_open",
    "idx_tasks_status",
)

_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS idx_tasks_claimable ON tasks(status, priority DESC, seq, created_at)"
    " WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS idx_steps_task_seq ON steps(task_id, seq)",
    "CREATE INDEX IF NOT EXISTS idx_sop_required_open ON sop_checklist(task_id, required, done_at)",
    "CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks(status, updated_at)",
)

_EVENT_AT: Final = "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"

# apiary's own objects. No foreign key on events: the history of a deleted task is kept. No index
# either: the audit trail is read rarely, and an index on random task ids would cost every claim
# an extra page write (measured: about a third of the claim throughput).
_APIARY_OBJECTS: Final = (
    """CREATE TABLE IF NOT EXISTS apiary_task_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        at TEXT NOT NULL,
        worker_id TEXT,
        kind TEXT NOT NULL,
        from_status TEXT,
        to_status TEXT,
        detail TEXT
    )""",
    f"""CREATE TRIGGER IF NOT EXISTS apiary_trg_task_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO apiary_task_events (task_id, at, worker_id, kind, from_status, to_status, detail)
        VALUES (NEW.id, {_EVENT_AT}, NEW.worker_id, 'created', NULL, NEW.status, NEW.source);
    END""",
    # A return to pending with a higher retry_count is a stale reclaim, otherwise a release.
    f"""CREATE TRIGGER IF NOT EXISTS apiary_trg_task_status AFTER UPDATE OF status ON tasks
    WHEN OLD.status IS NOT NEW.status BEGIN
        INSERT INTO apiary_task_events (task_id, at, worker_id, kind, from_status, to_status, detail)
        VALUES (NEW.id, {_EVENT_AT}, COALESCE(NEW.worker_id, OLD.worker_id),
            CASE NEW.status
                WHEN 'claimed' THEN 'claimed'
                WHEN 'in_progress' THEN 'started'
                WHEN 'done' THEN 'done'
                WHEN 'failed' THEN 'failed'
                WHEN 'pending' THEN
                    CASE WHEN NEW.retry_count > OLD.retry_count THEN 'reclaimed' ELSE 'released' END
                ELSE 'status'
            END,
            OLD.status, NEW.status,
            CASE WHEN NEW.status = 'failed' THEN NEW.last_error END);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS apiary_trg_task_delete AFTER DELETE ON tasks BEGIN
        INSERT INTO apiary_task_events (task_id, at, worker_id, kind, from_status, to_status, detail)
        VALUES (OLD.id, {_EVENT_AT}, OLD.worker_id, 'deleted', OLD.status, NULL, NULL);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS apiary_trg_step_status AFTER UPDATE OF status ON steps
    WHEN OLD.status IS NOT NEW.status BEGIN
        INSERT INTO apiary_task_events (task_id, at, worker_id, kind, from_status, to_status, detail)
        VALUES (NEW.task_id, {_EVENT_AT}, NEW.worker_id, 'step', NULL, NULL,
            json_object('seq', NEW.seq, 'from', OLD.status, 'to', NEW.status, 'evidence', NEW.evidence));
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS apiary_trg_sop_done AFTER UPDATE OF done_at ON sop_checklist
    WHEN OLD.done_at IS NOT NEW.done_at BEGIN
        INSERT INTO apiary_task_events (task_id, at, worker_id, kind, from_status, to_status, detail)
        VALUES (NEW.task_id, {_EVENT_AT}, NEW.done_by, 'sop', NULL, NULL,
            json_object('key', NEW.key,
                'done', json(CASE WHEN NEW.done_at IS NULL THEN 'false' ELSE 'true' END),
                'note', NEW.note));
    END""",
)


def connect(db_path: Path | str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection with the SPEC's pragmas, in autocommit mode (transactions are explicit)."""
    conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=5.0, check_same_thread=check_same_thread)
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")  # inside the try: a failed COMMIT (deferred FK check) rolls back too
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One consistent snapshot across several SELECTs."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def now_param(now: str | None) -> str:
    """The ``:now`` parameter: SQLite's ``'now'`` in production, a fixed datetime text in tests."""
    return "now" if now is None else now


def _create_table_sql(table: str) -> str:
    parts = [f"{name} {decl}" for name, decl in _COLUMNS[table]]
    parts.extend(_TABLE_CONSTRAINTS.get(table, ()))
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    " + ",\n    ".join(parts) + "\n)"


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Migrate a file made by an older writer: add SPEC columns it lacks (never drop or rename)."""
    for table, columns in _COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns:
            if name in present or "PRIMARY KEY" in decl:
                continue
            if "NOT NULL" in decl and "DEFAULT" not in decl:
                decl = f"{decl} DEFAULT ''"  # ADD COLUMN needs a default for existing rows
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create or migrate the schema; idempotent and safe to run from several processes at once."""
    with write_transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for table in _COLUMNS:
            conn.execute(_create_table_sql(table))
        _add_missing_columns(conn)
        for statement in (*_INDEXES, *_APIARY_OBJECTS):
            conn.execute(statement)
        if version > SCHEMA_VERSION:
            return  # a newer writer's file: usable, but never downgraded
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(
            "INSERT INTO colony_meta (key, value, updated_at)"
            f" VALUES ('schema_version', :version, {ISO_SECONDS_SQL})"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
            " WHERE colony_meta.value IS NOT excluded.value",
            {"version": str(SCHEMA_VERSION), "now": "now"},
        )
