"""A colony's task queue ``data/progress.db`` (SPEC B 7): ensure, claim, heartbeat, finish, stale reclaim.

Synchronous functions on ``sqlite3`` connections from ``connect``; ``tasks.SqliteTaskQueue`` wraps
them for asyncio. Every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent claimers in any
processes are serialised by SQLite itself and never get the same row. Every status change is
recorded in ``apiary_task_events`` by triggers, inside the same transaction.

Times: ``claimed_at`` is ``datetime('now')`` text because stale detection compares it as text with
``datetime('now', ...)``; the other stamps are UTC ISO to the second. Mutators take ``now`` (SQLite
datetime text) only so tests can simulate time; production passes nothing and SQLite reads its clock.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiary.core.errors import Conflict, InvalidRequest
from apiary.core.ids import IdFactory, RandomIds
from apiary.core.jsonfile import read_json, write_json
from apiary.storage.sqlite.progress_reads import (
    CLAIM_ORDER,
    get_task,
    progress_snapshot,
    snapshot_items,
    task_counts,
    task_events,
)
from apiary.storage.sqlite.progress_schema import (
    ISO_SECONDS_SQL,
    SCHEMA_VERSION,
    STEP_STATUSES,
    TASK_STATUSES,
    connect,
    ensure_schema,
    now_param,
    write_transaction,
)
from apiary.storage.sqlite.progress_seed import (
    ENQUEUE_SOURCE,
    TaskSpec,
    enqueue_task,
    seed_tasks,
    validate_tasks,
)

__all__ = [
    "ENQUEUE_SOURCE",
    "SCHEMA_VERSION",
    "STALE_CLAIM_ERROR",
    "STEP_STATUSES",
    "TASK_STATUSES",
    "ClaimedTask",
    "TaskSpec",
    "claim",
    "complete",
    "connect",
    "enqueue_task",
    "ensure_progress_db",
    "ensure_schema",
    "fail",
    "get_task",
    "heartbeat",
    "mark_sop_done",
    "progress_snapshot",
    "reclaim_stale",
    "release",
    "seed_tasks",
    "set_step_status",
    "snapshot_items",
    "start",
    "task_counts",
    "task_events",
    "validate_tasks",
]

STALE_CLAIM_ERROR = "exceeded max_retries after stale claim"
DB_RELATIVE_PATH = Path("data") / "progress.db"
_NOT_PATCHED = frozenset({"metadata.json", "triggers.json"})
_RANDOM_IDS = RandomIds()  # stateless: draws from `secrets`
_ACTIVE = "status IN ('claimed', 'in_progress')"
_HELD = f"id = :id AND worker_id = :worker AND {_ACTIVE}"
_OPEN_REQUIRED = "SELECT key FROM sop_checklist WHERE task_id = :id AND required = 1 AND done_at IS NULL"


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    id: str
    goal: str
    payload: str | None
    worker_id: str
    claim_token: str
    claimed_at: str
    priority: int
    seq: int | None
    retry_count: int
    max_retries: int
    parent_task_id: str | None

    def payload_value(self) -> Any:
        """The payload decoded from JSON when it is JSON text, else the stored string."""
        if self.payload is None:
            return None
        try:
            return json.loads(self.payload)
        except ValueError:
            return self.payload


_CLAIM_SQL = (
    "UPDATE tasks SET status = 'claimed', worker_id = :worker, claim_token = :token,"
    f" claimed_at = datetime(:now), updated_at = {ISO_SECONDS_SQL}"
    " WHERE id = {target} AND status = 'pending'"
    " RETURNING id, goal, payload, worker_id, claim_token, claimed_at, priority, seq, retry_count,"
    " max_retries, parent_task_id"
)
_CLAIM_NEXT = _CLAIM_SQL.format(
    target=f"(SELECT id FROM tasks WHERE status = 'pending' ORDER BY {CLAIM_ORDER} LIMIT 1)"
)
_CLAIM_ID = _CLAIM_SQL.format(target=":task_id")


def claim(
    conn: sqlite3.Connection,
    worker_id: str,
    *,
    task_id: str | None = None,
    now: str | None = None,
    ids: IdFactory | None = None,
) -> ClaimedTask | None:
    """Claim ``task_id`` if it is pending, else (without ``task_id``) the next pending task.

    None means the queue is empty or the race was lost; the caller decides whether to fall back.
    """
    params = {
        "worker": worker_id,
        "token": (ids or _RANDOM_IDS).hex(16),
        "now": now_param(now),
        "task_id": task_id,
    }
    with write_transaction(conn):
        rows = conn.execute(_CLAIM_NEXT if task_id is None else _CLAIM_ID, params).fetchall()
    return ClaimedTask(*rows[0]) if rows else None


def _update_held(conn: sqlite3.Connection, set_sql: str, params: dict[str, Any]) -> bool:
    """One guarded UPDATE of a task the worker holds; True when it applied."""
    with write_transaction(conn):
        cur = conn.execute(f"UPDATE tasks SET {set_sql} WHERE {_HELD}", params)
    return cur.rowcount > 0


def heartbeat(conn: sqlite3.Connection, task_id: str, worker_id: str, *, now: str | None = None) -> bool:
    """Refresh ``claimed_at`` of a task the worker still holds, so stale reclaim leaves it alone."""
    return _update_held(
        conn,
        f"claimed_at = datetime(:now), updated_at = {ISO_SECONDS_SQL}",
        {"id": task_id, "worker": worker_id, "now": now_param(now)},
    )


def start(conn: sqlite3.Connection, task_id: str, worker_id: str, *, now: str | None = None) -> bool:
    """``claimed`` -> ``in_progress`` (idempotent while in progress); also a heartbeat."""
    return _update_held(
        conn,
        "status = 'in_progress', claimed_at = datetime(:now),"
        f" started_at = COALESCE(started_at, {ISO_SECONDS_SQL}), updated_at = {ISO_SECONDS_SQL}",
        {"id": task_id, "worker": worker_id, "now": now_param(now)},
    )


def complete(conn: sqlite3.Connection, task_id: str, worker_id: str, *, now: str | None = None) -> bool:
    """Mark a held task ``done``. False when the worker does not hold it.

    Raises ``Conflict`` (nothing written) while required checklist items are open.
    """
    params = {"id": task_id, "worker": worker_id, "now": now_param(now)}
    with write_transaction(conn):
        cur = conn.execute(
            f"UPDATE tasks SET status = 'done', completed_at = {ISO_SECONDS_SQL},"
            f" updated_at = {ISO_SECONDS_SQL}"
            f" WHERE {_HELD} AND NOT EXISTS ({_OPEN_REQUIRED})",
            params,
        )
        if cur.rowcount:
            return True
        if conn.execute(f"SELECT 1 FROM tasks WHERE {_HELD}", params).fetchone() is None:
            return False
        keys = [row[0] for row in conn.execute(f"{_OPEN_REQUIRED} ORDER BY rowid", params)]
    raise Conflict(
        f"task {task_id} cannot be done: required checklist items are open: {', '.join(keys)}",
        task_id=task_id,
        open_items=keys,
    )


def fail(conn: sqlite3.Connection, task_id: str, worker_id: str, error: str, *, now: str | None = None) -> bool:
    """Mark a held task ``failed`` with ``last_error``. False when the worker does not hold it."""
    return _update_held(
        conn,
        f"status = 'failed', last_error = :error, completed_at = {ISO_SECONDS_SQL}, updated_at = {ISO_SECONDS_SQL}",
        {"id": task_id, "worker": worker_id, "error": str(error), "now": now_param(now)},
    )


def release(conn: sqlite3.Connection, task_id: str, worker_id: str, *, now: str | None = None) -> bool:
    """Give a held task back to ``pending`` without counting a retry (a worker that gives up on purpose)."""
    return _update_held(
        conn,
        "status = 'pending', worker_id = NULL, claim_token = NULL, claimed_at = NULL, started_at = NULL,"
        f" updated_at = {ISO_SECONDS_SQL}",
        {"id": task_id, "worker": worker_id, "now": now_param(now)},
    )


def reclaim_stale(conn: sqlite3.Connection, *, stale_claim_s: float, now: str | None = None) -> int:
    """Fail stale claims that used up their retries, return the others to ``pending``; count returned."""
    if stale_claim_s < 0:
        raise InvalidRequest("stale_claim_s must not be negative")
    params = {"now": now_param(now), "age": f"-{float(stale_claim_s)} seconds", "error": STALE_CLAIM_ERROR}
    stale = f"{_ACTIVE} AND (claimed_at IS NULL OR claimed_at < datetime(:now, :age))"
    with write_transaction(conn):
        conn.execute(
            f"UPDATE tasks SET status = 'failed', last_error = :error, completed_at = {ISO_SECONDS_SQL},"
            f" updated_at = {ISO_SECONDS_SQL} WHERE {stale} AND retry_count >= max_retries",
            params,
        )
        cur = conn.execute(
            "UPDATE tasks SET status = 'pending', worker_id = NULL, claim_token = NULL, claimed_at = NULL,"
            f" started_at = NULL, retry_count = retry_count + 1, updated_at = {ISO_SECONDS_SQL}"
            f" WHERE {stale}",
            params,
        )
    return cur.rowcount


def _touch_task(conn: sqlite3.Connection, params: dict[str, Any]) -> None:
    # Step and checklist progress is a change of the task for pollers watching updated_at.
    conn.execute(f"UPDATE tasks SET updated_at = {ISO_SECONDS_SQL} WHERE id = :id", params)


def set_step_status(
    conn: sqlite3.Connection,
    task_id: str,
    seq: int,
    status: str,
    *,
    worker_id: str | None = None,
    evidence: str | None = None,
    now: str | None = None,
) -> bool:
    """Set a step's status; with ``worker_id`` only while that worker holds the task. False: no change."""
    if status not in STEP_STATUSES:
        raise InvalidRequest(f"step status must be one of {', '.join(STEP_STATUSES)}")
    params = {
        "id": task_id,
        "seq": seq,
        "status": status,
        "worker": worker_id,
        "evidence": evidence,
        "now": now_param(now),
    }
    with write_transaction(conn):
        cur = conn.execute(
            "UPDATE steps SET status = :status, evidence = COALESCE(:evidence, evidence),"
            " worker_id = COALESCE(:worker, worker_id),"
            " started_at = CASE WHEN :status = 'pending' THEN NULL"
            f"   ELSE COALESCE(started_at, {ISO_SECONDS_SQL}) END,"
            f" completed_at = CASE WHEN :status = 'done' THEN COALESCE(completed_at, {ISO_SECONDS_SQL}) END"
            " WHERE task_id = :id AND seq = :seq"
            f" AND (:worker IS NULL OR EXISTS (SELECT 1 FROM tasks WHERE {_HELD}))",
            params,
        )
        if cur.rowcount:
            _touch_task(conn, params)
    return cur.rowcount > 0


def mark_sop_done(
    conn: sqlite3.Connection,
    task_id: str,
    key: str,
    worker_id: str,
    note: str | None = None,
    *,
    now: str | None = None,
) -> bool:
    """Tick a checklist item of a task the worker holds (first tick's time and worker are kept)."""
    params = {"id": task_id, "key": key, "worker": worker_id, "note": note, "now": now_param(now)}
    with write_transaction(conn):
        cur = conn.execute(
            f"UPDATE sop_checklist SET done_at = COALESCE(done_at, {ISO_SECONDS_SQL}),"
            " done_by = CASE WHEN done_at IS NULL THEN :worker ELSE done_by END,"
            " note = COALESCE(:note, note)"
            f" WHERE task_id = :id AND key = :key AND EXISTS (SELECT 1 FROM tasks WHERE {_HELD})",
            params,
        )
        if cur.rowcount:
            _touch_task(conn, params)
    return cur.rowcount > 0


def _patch_colony_files(colony_dir: Path, db_path: Path, data_dir: Path) -> None:
    wanted = {"db_path": str(db_path), "colony_id": colony_dir.name, "colony_data_dir": str(data_dir)}
    for path in sorted(colony_dir.glob("*.json")):
        if path.name in _NOT_PATCHED or path.name.startswith(".") or not path.is_file():
            continue
        doc = read_json(path)
        if not isinstance(doc, dict) or "system_prompt" not in doc:
            continue
        input_data = doc.get("input_data")
        if isinstance(input_data, dict) and all(input_data.get(k) == v for k, v in wanted.items()):
            continue  # up to date: leave the file (and its mtime) alone
        doc["input_data"] = {**(input_data if isinstance(input_data, dict) else {}), **wanted}
        write_json(path, doc)


def ensure_progress_db(colony_dir: Path, *, stale_claim_s: float = 900) -> Path:
    """Create ``data/``, create or migrate the schema, reclaim stale claims, point the worker spec at it.

    Idempotent; returns the absolute database path.
    """
    colony_dir = Path(colony_dir).resolve()
    db_path = colony_dir / DB_RELATIVE_PATH
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(db_path)
    try:
        ensure_schema(conn)
        reclaim_stale(conn, stale_claim_s=stale_claim_s)
    finally:
        conn.close()
    _patch_colony_files(colony_dir, db_path, db_path.parent)
    return db_path
