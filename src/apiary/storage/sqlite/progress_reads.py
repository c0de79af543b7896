"""Read side of ``progress.db``: task counts (SPEC B 10) and the progress snapshot (part A 3.7)."""

from __future__ import annotations

import sqlite3
from typing import Any

from apiary.storage.sqlite.progress_schema import TASK_STATUSES, read_transaction

# rowid last: rows seeded in the same second keep their insertion order (still served by the index).
CLAIM_ORDER = "priority DESC, seq, created_at, rowid"

_ITEM_COLUMNS = "id, goal, status, priority, worker_id, retry_count, last_error, created_at, updated_at, completed_at"


def _dicts(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def task_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """``{"total", "pending", "claimed", "in_progress", "done", "failed"}``; total counts every row."""
    counts = dict.fromkeys(("total", *TASK_STATUSES), 0)
    for status, n in conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"):
        counts["total"] += n
        if status in counts:
            counts[status] += n
    return counts


def snapshot_items(conn: sqlite3.Connection, limit: int = 500) -> list[dict[str, Any]]:
    """At most ``limit`` tasks in claim order, each with ``steps: [{seq, title, status}]``."""
    with read_transaction(conn):
        return _items(conn, limit)


def progress_snapshot(conn: sqlite3.Connection, limit: int = 500) -> dict[str, Any]:
    """``{"tasks": counts, "items": [...]}`` from one consistent read."""
    with read_transaction(conn):
        return {"tasks": task_counts(conn), "items": _items(conn, limit)}


def _items(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    limit = max(0, int(limit))
    cur = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM tasks ORDER BY {CLAIM_ORDER} LIMIT ?", (limit,))
    items = _dicts(cur)
    by_id: dict[str, dict[str, Any]] = {}
    for item in items:
        item["steps"] = []
        by_id[item["id"]] = item
    if by_id:
        rows = conn.execute(
            "SELECT task_id, seq, title, status FROM steps WHERE task_id IN"
            f" (SELECT id FROM tasks ORDER BY {CLAIM_ORDER} LIMIT ?) ORDER BY task_id, seq",
            (limit,),
        )
        for task_id, seq, title, status in rows:
            if task_id in by_id:
                by_id[task_id]["steps"].append({"seq": seq, "title": title, "status": status})
    return items


def get_task(conn: sqlite3.Connection, task_id: str) -> dict[str, Any] | None:
    """Every column of the task, plus its full ``steps`` and ``sop_items`` rows; None when unknown."""
    with read_transaction(conn):
        rows = _dicts(conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)))
        if not rows:
            return None
        task = rows[0]
        task["steps"] = _dicts(conn.execute("SELECT * FROM steps WHERE task_id = ? ORDER BY seq", (task_id,)))
        task["sop_items"] = _dicts(
            conn.execute("SELECT * FROM sop_checklist WHERE task_id = ? ORDER BY rowid", (task_id,))
        )
        return task


def task_events(conn: sqlite3.Connection, task_id: str) -> list[dict[str, Any]]:
    """The audit trail of one task (apiary's ``apiary_task_events``), oldest first."""
    return _dicts(conn.execute("SELECT * FROM apiary_task_events WHERE task_id = ? ORDER BY id", (task_id,)))
