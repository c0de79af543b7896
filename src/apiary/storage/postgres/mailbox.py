"""Messages between processes sharing the database: a row per message, a NOTIFY with its target.

Targets are ``queen:<session id>`` (a worker host tells a queen something: a report, an
escalation, that the colony is idle) and ``control:<execution id>`` (stop one execution wherever
it runs). The notification carries only the target; the body waits in the table until taken,
so nothing is lost while a listener reconnects.
"""

from __future__ import annotations

import json
from typing import Any

from apiary.storage.base import Coordination
from apiary.storage.postgres.database import PgDatabase

CHANNEL = Coordination.CHANNEL



class PgMailbox:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def post(self, target: str, body: dict[str, Any]) -> None:
        await self._db.transaction([
            ("INSERT INTO apiary_mailbox (target, body) VALUES (%s, %s)", (target, json.dumps(body))),
            ("SELECT pg_notify(%s, %s)", (CHANNEL, target))])

    async def take(self, target: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "UPDATE apiary_mailbox SET taken = true WHERE id IN (SELECT id FROM apiary_mailbox WHERE target = %s"
            " AND NOT taken ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING id, body", (target,))
        return [json.loads(body) for _, body in sorted(rows)]


class PgColonyRegistry:
    """Which colonies exist, their worker spec and the session their events go to (for worker hosts)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def register(self, name: str, session_id: str, spec: dict[str, Any]) -> None:
        await self._db.execute(
            "INSERT INTO apiary_colonies (name, session_id, spec) VALUES (%s, %s, %s) ON CONFLICT (name)"
            " DO UPDATE SET session_id = EXCLUDED.session_id, spec = EXCLUDED.spec, updated_at = now()",
            (name, session_id, json.dumps(spec, ensure_ascii=False)))

    async def get(self, name: str) -> tuple[str, dict[str, Any]] | None:
        row = await self._db.fetchone("SELECT session_id, spec FROM apiary_colonies WHERE name = %s", (name,))
        return (row[0], json.loads(row[1])) if row else None

    async def with_pending_tasks(self) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT DISTINCT t.colony FROM apiary_tasks t JOIN apiary_colonies c ON c.name = t.colony"
            " WHERE t.status = 'pending' ORDER BY t.colony")
        return [r[0] for r in rows]
