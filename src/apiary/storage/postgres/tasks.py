"""A colony's task queue on PostgreSQL: the same contract as progress.db, for many hosts.

Claims take the first pending row with ``FOR UPDATE SKIP LOCKED``, so concurrent claimers on any
host never get the same task and never wait on each other. A claim holds a lease (``lease_until``)
that ``heartbeat`` renews; ``reclaim_stale`` on any node returns expired claims to ``pending``
(``retry_count + 1``) or fails them after ``max_retries``. Every change is recorded in
``apiary_task_events`` in the same transaction. Times come from the database clock."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from apiary.core.errors import Conflict
from apiary.storage.base import TaskQueue
from apiary.storage.postgres.database import PgDatabase
from apiary.storage.sqlite.progress_db import ClaimedTask, validate_tasks

STATUSES = ("pending", "claimed", "in_progress", "done", "failed")
CHANNEL = "apiary_tasks"
_RETURNING = ("id, goal, payload, worker_id, claim_token, claimed_at, priority, seq, retry_count, max_retries,"
              " parent_task_id")
_ORDER = "priority DESC, seq ASC NULLS FIRST, created_at, id"   # the index apiary_tasks_claim_order
_NO_OPEN_ITEMS = (" AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(COALESCE(sop_items, '[]')::jsonb) s"
                  " WHERE (s->>'required')::boolean AND s->>'done_at' IS NULL)")


def _iso(value: Any) -> Any:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def _claimed(row: tuple[Any, ...]) -> ClaimedTask:
    return ClaimedTask(id=row[0], goal=row[1], payload=row[2], worker_id=row[3], claim_token=row[4],
                       claimed_at=_iso(row[5]), priority=row[6], seq=row[7], retry_count=row[8],
                       max_retries=row[9], parent_task_id=row[10])


class PgTaskQueue(TaskQueue):
    def __init__(self, db: PgDatabase, colony: str, *, lease_s: float = 900.0) -> None:
        self._db = db
        self.colony = colony
        self.lease_s = lease_s

    def _log(self, task_id: str, worker_id: str | None, kind: str, before: str | None, after: str | None,
             detail: str | None = None) -> tuple[str, tuple[Any, ...]]:
        return ("INSERT INTO apiary_task_events (colony, task_id, worker_id, kind, from_status, to_status, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)", (self.colony, task_id, worker_id, kind, before, after, detail))

    async def enqueue(self, tasks: list[dict[str, Any]], source: str = "enqueue_tool") -> list[str]:
        specs = validate_tasks(tasks)
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for spec in specs:
            steps = [{"seq": s.seq, "title": s.title, "detail": s.detail, "status": "pending"} for s in spec.steps]
            sops = [{"key": s.key, "description": s.description, "required": s.required, "done_at": None}
                    for s in spec.sop_items]
            statements.append((
                # clock_timestamp(), not now(): tasks seeded together are claimed in the order given
                "INSERT INTO apiary_tasks (colony, id, seq, priority, goal, payload, max_retries, parent_task_id,"
                " source, steps, sop_items, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " clock_timestamp())",
                (self.colony, spec.id, spec.seq, spec.priority, spec.goal, spec.payload, spec.max_retries,
                 spec.parent_task_id, source, json.dumps(steps), json.dumps(sops))))
            statements.append(self._log(spec.id, None, "created", None, "pending"))
        statements.append(("SELECT pg_notify(%s, %s)", (CHANNEL, self.colony)))
        try:
            await self._db.transaction(statements)
        except Exception as exc:
            if "duplicate key" in str(exc):
                raise Conflict("a task with that id already exists in this colony") from exc
            raise
        return [s.id for s in specs]

    async def claim(self, worker_id: str, task_id: str | None = None) -> ClaimedTask | None:
        target = ("%s" if task_id else
                  f"(SELECT id FROM apiary_tasks WHERE colony = %s AND status = 'pending' ORDER BY {_ORDER}"
                  " LIMIT 1 FOR UPDATE SKIP LOCKED)")
        params: tuple[Any, ...] = (task_id,) if task_id else (self.colony,)
        # One statement (the claim and its audit row): atomic without BEGIN/COMMIT round trips.
        sql = (f"WITH c AS (UPDATE apiary_tasks SET status = 'claimed', worker_id = %s, claim_token = %s,"
               f" claimed_at = now(), updated_at = now(), lease_until = now() + make_interval(secs => %s)"
               f" WHERE colony = %s AND status = 'pending' AND id = {target} RETURNING {_RETURNING}),"
               " a AS (INSERT INTO apiary_task_events (colony, task_id, worker_id, kind, from_status, to_status)"
               " SELECT %s, id, %s, 'claimed', 'pending', 'claimed' FROM c) SELECT * FROM c")
        token = secrets.token_hex(8)
        row = await self._db.fetchone(sql, (worker_id, token, self.lease_s, self.colony, *params, self.colony,
                                            worker_id))
        return _claimed(row) if row is not None else None

    async def _held(self, task_id: str, worker_id: str, set_sql: str, kind: str, to_status: str | None,
                    params: tuple[Any, ...] = (), detail: str | None = None, *, extra_where: str = "") -> bool:
        update = (f"UPDATE apiary_tasks SET {set_sql}, updated_at = now() WHERE colony = %s AND id = %s"
                  f" AND worker_id = %s AND status IN ('claimed', 'in_progress'){extra_where} RETURNING id")
        values = (*params, self.colony, task_id, worker_id)
        if kind == "heartbeat":
            return await self._db.fetchone(update, values) is not None
        row = await self._db.fetchone(
            f"WITH u AS ({update}), a AS (INSERT INTO apiary_task_events (colony, task_id, worker_id, kind,"
            " from_status, to_status, detail) SELECT %s, id, %s, %s, NULL, %s, %s FROM u) SELECT id FROM u",
            (*values, self.colony, worker_id, kind, to_status, detail))
        return row is not None

    async def heartbeat(self, task_id: str, worker_id: str) -> bool:
        return await self._held(task_id, worker_id, "lease_until = now() + make_interval(secs => %s)", "heartbeat",
                                None, (self.lease_s,))

    async def start(self, task_id: str, worker_id: str) -> bool:
        return await self._held(task_id, worker_id, "status = 'in_progress', started_at = COALESCE(started_at, now())",
                                "started", "in_progress")

    async def complete(self, task_id: str, worker_id: str) -> bool:
        # The checklist is checked in the same statement; only a refusal reads the row again to say why.
        if await self._held(task_id, worker_id, "status = 'done', completed_at = now(), lease_until = NULL", "done",
                            "done", extra_where=_NO_OPEN_ITEMS):
            return True
        row = await self._db.fetchone("SELECT sop_items FROM apiary_tasks WHERE colony = %s AND id = %s",
                                      (self.colony, task_id))
        open_items = [s["key"] for s in json.loads(row[0] or "[]") if s.get("required") and not s.get("done_at")] \
            if row else []
        if open_items:
            raise Conflict(f"task {task_id} has open required checklist items: {', '.join(open_items)}",
                           open_items=open_items)
        return False

    async def fail(self, task_id: str, worker_id: str, error: str) -> bool:
        return await self._held(task_id, worker_id, "status = 'failed', completed_at = now(), last_error = %s,"
                                " lease_until = NULL", "failed", "failed", (error[:2000],), error[:500])

    async def release(self, task_id: str, worker_id: str) -> bool:
        return await self._held(task_id, worker_id, "status = 'pending', worker_id = NULL, claim_token = NULL,"
                                " claimed_at = NULL, started_at = NULL, lease_until = NULL", "released", "pending")

    async def remove(self, task_ids: list[str]) -> None:
        await self._db.execute("DELETE FROM apiary_tasks WHERE colony = %s AND id = ANY(%s)", (self.colony, task_ids))

    async def reclaim_stale(self, stale_claim_s: float | None = None) -> int:
        async with self._db.pool.connection() as conn, conn.transaction():
            failed = await (await conn.execute(
                "UPDATE apiary_tasks SET status = 'failed', last_error = 'exceeded max_retries after stale claim',"
                " completed_at = now(), updated_at = now(), lease_until = NULL WHERE colony = %s"
                " AND status IN ('claimed', 'in_progress') AND lease_until < now() AND retry_count >= max_retries"
                " RETURNING id", (self.colony,))).fetchall()
            back = await (await conn.execute(
                "UPDATE apiary_tasks SET status = 'pending', worker_id = NULL, claim_token = NULL, claimed_at = NULL,"
                " started_at = NULL, lease_until = NULL, retry_count = retry_count + 1, updated_at = now()"
                " WHERE colony = %s AND status IN ('claimed', 'in_progress') AND lease_until < now() RETURNING id",
                (self.colony,))).fetchall()
            for (task_id,) in failed:
                await conn.execute(*self._log(task_id, None, "failed", None, "failed", "stale claim"))
            for (task_id,) in back:
                await conn.execute(*self._log(task_id, None, "reclaimed", None, "pending"))
            if back:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.colony))
        return len(back)

    async def counts(self) -> dict[str, int]:
        rows = await self._db.fetchall("SELECT status, COUNT(*) FROM apiary_tasks WHERE colony = %s GROUP BY status",
                                       (self.colony,))
        counts = dict.fromkeys(("total", *STATUSES), 0)
        for status, n in rows:
            counts["total"] += n
            if status in counts:
                counts[status] += n
        return counts

    async def snapshot(self, limit: int = 500, *, task_id: str | None = None) -> list[dict[str, Any]]:
        only = " AND id = %s" if task_id is not None else ""
        rows = await self._db.fetchall(
            "SELECT id, goal, status, priority, worker_id, retry_count, last_error, created_at, updated_at,"
            f" completed_at, steps FROM apiary_tasks WHERE colony = %s{only} ORDER BY {_ORDER} LIMIT %s",
            (self.colony, *((task_id,) if task_id is not None else ()), max(0, int(limit))))
        names = ("id", "goal", "status", "priority", "worker_id", "retry_count", "last_error", "created_at",
                 "updated_at", "completed_at")
        items = []
        for row in rows:
            item = {name: _iso(value) for name, value in zip(names, row[:10], strict=True)}
            item["steps"] = [{"seq": s["seq"], "title": s["title"], "status": s["status"]}
                             for s in json.loads(row[10] or "[]")]
            items.append(item)
        return items

    async def progress(self, limit: int = 500) -> dict[str, Any]:
        return {"tasks": await self.counts(), "items": await self.snapshot(limit)}

    async def get(self, task_id: str) -> dict[str, Any] | None:
        items = await self.snapshot(1, task_id=task_id)   # one row, not the whole queue
        return items[0] if items else None

    async def events(self, task_id: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT id, at, worker_id, kind, from_status, to_status, detail FROM apiary_task_events"
            " WHERE colony = %s AND task_id = %s ORDER BY id", (self.colony, task_id))
        return [{"id": r[0], "at": _iso(r[1]), "worker_id": r[2], "kind": r[3], "from_status": r[4],
                 "to_status": r[5], "detail": r[6]} for r in rows]

    async def close(self) -> None:
        return None
