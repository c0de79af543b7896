"""``Coordination`` on PostgreSQL: execution rows claimed with SKIP LOCKED under a lease, the mailbox
and the colony registry. Every change that someone waits for ends with a NOTIFY of its target."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from apiary.storage.base import ClaimedExecution, Coordination
from apiary.storage.postgres.database import PgDatabase
from apiary.storage.postgres.mailbox import PgColonyRegistry, PgMailbox

ACTIVE = "('pending', 'running')"


class PgCoordination(Coordination):
    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._mailbox = PgMailbox(db)
        self._registry = PgColonyRegistry(db)

    # -- executions --------------------------------------------------------------------------------

    async def submit(self, colony: str, execution_id: str, session_id: str, entry_point: str,
                     request: dict[str, Any]) -> bool:
        body = json.dumps(request, ensure_ascii=False)
        try:
            async with self._db.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO apiary_executions (colony, id, session_id, entry_point, request) VALUES"
                    " (%s, %s, %s, %s, %s) ON CONFLICT (colony, id) DO UPDATE SET session_id = EXCLUDED.session_id,"
                    " entry_point = EXCLUDED.entry_point, request = EXCLUDED.request, status = 'pending',"
                    " worker = NULL, lease_until = NULL, attempts = 0, cancel_reason = NULL, outcome = NULL,"
                    " created_at = now(), updated_at = now() WHERE apiary_executions.status = 'ended' RETURNING id",
                    (colony, execution_id, session_id, entry_point, body))
                if await cur.fetchone() is None:
                    return False
                await conn.execute("SELECT pg_notify(%s, %s)", (self.CHANNEL, self.WORK))
        except psycopg.errors.UniqueViolation:
            return False   # another execution is active on this entry point
        return True

    async def claim_executions(self, worker: str, limit: int, lease_s: float) -> list[ClaimedExecution]:
        rows = await self._db.fetchall(
            "UPDATE apiary_executions e SET status = 'running', worker = %s, attempts = e.attempts + 1,"
            " lease_until = now() + make_interval(secs => %s), updated_at = now() FROM (SELECT colony, id FROM"
            " apiary_executions WHERE (status = 'pending' AND cancel_reason IS NULL) OR (status = 'running' AND"
            " lease_until < now()) ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED) c"
            " WHERE e.colony = c.colony AND e.id = c.id"
            " RETURNING e.colony, e.id, e.session_id, e.entry_point, e.request, e.attempts, e.cancel_reason",
            (worker, lease_s, limit))
        return [ClaimedExecution(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    async def renew(self, colony: str, execution_id: str, worker: str, lease_s: float) -> bool:
        rows = await self._db.fetchall(
            "UPDATE apiary_executions SET lease_until = now() + make_interval(secs => %s) WHERE colony = %s"
            " AND id = %s AND worker = %s AND status = 'running' RETURNING id", (lease_s, colony, execution_id, worker))
        return bool(rows)

    async def finish(self, colony: str, execution_id: str, worker: str, outcome: str) -> bool:
        rows = await self._db.fetchall(
            "UPDATE apiary_executions SET status = 'ended', outcome = %s, lease_until = NULL, updated_at = now()"
            " WHERE colony = %s AND id = %s AND worker = %s AND status = 'running' RETURNING id",
            (outcome, colony, execution_id, worker))
        return bool(rows)

    async def release(self, colony: str, execution_id: str, worker: str) -> bool:
        async with self._db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE apiary_executions SET status = 'pending', worker = NULL, lease_until = NULL, updated_at = now()"
                " WHERE colony = %s AND id = %s AND worker = %s AND status = 'running' RETURNING id",
                (colony, execution_id, worker))
            released = await cur.fetchone() is not None
            if released:
                await conn.execute("SELECT pg_notify(%s, %s)", (self.CHANNEL, self.WORK))
        return released

    async def request_cancel(self, colony: str, execution_id: str, reason: str) -> str:
        async with self._db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE apiary_executions SET cancel_reason = COALESCE(cancel_reason, %s), updated_at = now(),"
                " status = CASE WHEN status = 'pending' THEN 'ended' ELSE status END,"
                " outcome = CASE WHEN status = 'pending' THEN 'cancelled' ELSE outcome END"
                f" WHERE colony = %s AND id = %s AND status IN {ACTIVE} RETURNING status",
                (reason, colony, execution_id))
            row = await cur.fetchone()
            if row is None:
                return "not_found"
            await conn.execute("SELECT pg_notify(%s, %s)", (self.CHANNEL, self.exec_target(colony, execution_id)))
        return "ended" if row[0] == "ended" else "running"

    async def cancel_reason(self, colony: str, execution_id: str) -> str | None:
        row = await self._db.fetchone(
            "SELECT cancel_reason FROM apiary_executions WHERE colony = %s AND id = %s", (colony, execution_id))
        return row[0] if row else None

    async def active_executions(self, colony: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT id, session_id, entry_point, request, status, worker, attempts, cancel_reason,"
            f" extract(epoch FROM created_at) FROM apiary_executions WHERE colony = %s AND status IN {ACTIVE}"
            " ORDER BY created_at", (colony,))
        names = ("id", "session_id", "entry_point", "request", "status", "worker", "attempts", "cancel_reason",
                 "created_at")
        out = [dict(zip(names, r, strict=True)) for r in rows]
        for item in out:
            item["request"] = json.loads(item["request"])
            item["created_at"] = float(item["created_at"])
        return out

    # -- mailbox, registry, wake-ups ----------------------------------------------------------------

    async def post(self, target: str, body: dict[str, Any]) -> None:
        await self._mailbox.post(target, body)

    async def take(self, target: str) -> list[dict[str, Any]]:
        return await self._mailbox.take(target)

    async def register_colony(self, name: str, session_id: str, files: dict[str, str]) -> None:
        await self._registry.register(name, session_id, files)

    async def colony_files(self, name: str) -> dict[str, str] | None:
        found = await self._registry.get(name)
        if found is None or not isinstance(found[1], dict):
            return None
        return {str(k): str(v) for k, v in found[1].items()}

    async def wake(self, target: str) -> None:
        await self._db.execute("SELECT pg_notify(%s, %s)", (self.CHANNEL, target))

    # -- session leases ----------------------------------------------------------------------------

    async def lease_session(self, session_id: str, owner: str, lease_s: float, *, take_from: str | None = None) -> str:
        row = await self._db.fetchone(
            "INSERT INTO apiary_session_leases (session_id, owner, lease_until) VALUES (%s, %s, now() +"
            " make_interval(secs => %s)) ON CONFLICT (session_id) DO UPDATE SET owner = EXCLUDED.owner,"
            " lease_until = EXCLUDED.lease_until WHERE apiary_session_leases.owner = EXCLUDED.owner"
            " OR apiary_session_leases.lease_until < now() OR apiary_session_leases.owner = %s RETURNING owner",
            (session_id, owner, lease_s, take_from))
        if row is not None:
            return str(row[0])
        held = await self._db.fetchone("SELECT owner FROM apiary_session_leases WHERE session_id = %s",
                                       (session_id,))
        return str(held[0]) if held else owner

    async def renew_sessions(self, owner: str, lease_s: float) -> None:
        await self._db.execute("UPDATE apiary_session_leases SET lease_until = now() + make_interval(secs => %s)"
                               " WHERE owner = %s", (lease_s, owner))

    async def release_session(self, session_id: str | None, owner: str) -> None:
        if session_id is None:
            await self._db.execute("DELETE FROM apiary_session_leases WHERE owner = %s", (owner,))
        else:
            await self._db.execute("DELETE FROM apiary_session_leases WHERE session_id = %s AND owner = %s",
                                   (session_id, owner))
