"""Worker sessions and checkpoints in PostgreSQL, so any host can list, resume or replay them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from apiary.core.clock import utc_iso
from apiary.storage.base import WorkerSessionStore
from apiary.storage.postgres.database import PgDatabase


class PgWorkerSession(WorkerSessionStore):
    def __init__(self, db: PgDatabase, colony: str, session_id: str) -> None:
        self._db = db
        self.colony = colony
        self.id = session_id

    async def exists(self) -> bool:
        row = await self._db.fetchone("SELECT 1 FROM apiary_worker_sessions WHERE colony = %s AND id = %s",
                                      (self.colony, self.id))
        return row is not None

    async def read_state(self) -> dict[str, Any] | None:
        row = await self._db.fetchone("SELECT state FROM apiary_worker_sessions WHERE colony = %s AND id = %s",
                                      (self.colony, self.id))
        if row is None or row[0] is None:
            return None
        value = json.loads(row[0])
        if not isinstance(value, dict):
            raise ValueError("stored state is not an object")
        return value

    async def write_state(self, state: dict[str, Any]) -> None:
        await self._db.execute(
            "INSERT INTO apiary_worker_sessions (colony, id, state) VALUES (%s, %s, %s) ON CONFLICT (colony, id)"
            " DO UPDATE SET state = EXCLUDED.state", (self.colony, self.id, json.dumps(state, ensure_ascii=False)))

    async def append_run(self, run_id: str, event: str, now: float, error: str | None = None) -> None:
        line: dict[str, Any] = {"run_id": run_id, "event": event, "timestamp": utc_iso(now), "created_at": now}
        if error is not None:
            line["error"] = error[:500]
        await self._db.execute("INSERT INTO apiary_worker_runs (colony, session_id, line) VALUES (%s, %s, %s)",
                               (self.colony, self.id, json.dumps(line)))

    async def new_checkpoint_id(self, kind: str, node: str, now: float) -> str:
        row = await self._db.fetchone(
            "INSERT INTO apiary_worker_sessions (colony, id, checkpoint_counter) VALUES (%s, %s, 1)"
            " ON CONFLICT (colony, id) DO UPDATE SET checkpoint_counter = apiary_worker_sessions.checkpoint_counter"
            " + 1 RETURNING checkpoint_counter", (self.colony, self.id))
        assert row is not None
        when = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d_%H%M%S")
        return f"cp_{kind}_{node}_{when}_{row[0]}"

    async def write_checkpoint(self, checkpoint: dict[str, Any], *, force_index: bool = False) -> None:
        number = int(str(checkpoint["checkpoint_id"]).rsplit("_", 1)[-1])
        await self._db.execute(
            "INSERT INTO apiary_checkpoints (colony, session_id, n, checkpoint_id, body) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (colony, session_id, checkpoint_id) DO UPDATE SET body = EXCLUDED.body",
            (self.colony, self.id, number, checkpoint["checkpoint_id"], json.dumps(checkpoint, ensure_ascii=False)))

    async def list_checkpoints(self) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT body FROM apiary_checkpoints WHERE colony = %s AND session_id = %s ORDER BY n",
            (self.colony, self.id))
        return [json.loads(r[0]) for r in rows]

    async def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT body FROM apiary_checkpoints WHERE colony = %s AND session_id = %s AND checkpoint_id = %s",
            (self.colony, self.id, checkpoint_id))
        return json.loads(row[0]) if row else None

    async def save(self, checkpoint: dict[str, Any], state: dict[str, Any], *, force_index: bool = False) -> None:
        number = int(str(checkpoint["checkpoint_id"]).rsplit("_", 1)[-1])
        await self._db.transaction([
            ("INSERT INTO apiary_checkpoints (colony, session_id, n, checkpoint_id, body) VALUES (%s, %s, %s, %s, %s)"
             " ON CONFLICT (colony, session_id, checkpoint_id) DO UPDATE SET body = EXCLUDED.body",
             (self.colony, self.id, number, checkpoint["checkpoint_id"], json.dumps(checkpoint, ensure_ascii=False))),
            ("INSERT INTO apiary_worker_sessions (colony, id, state) VALUES (%s, %s, %s) ON CONFLICT (colony, id)"
             " DO UPDATE SET state = EXCLUDED.state", (self.colony, self.id, json.dumps(state, ensure_ascii=False)))])

    async def end(self, state: dict[str, Any], run_id: str, event: str, now: float, error: str | None = None) -> None:
        line: dict[str, Any] = {"run_id": run_id, "event": event, "timestamp": utc_iso(now), "created_at": now}
        if error is not None:
            line["error"] = error[:500]
        await self._db.transaction([
            ("INSERT INTO apiary_worker_sessions (colony, id, state) VALUES (%s, %s, %s) ON CONFLICT (colony, id)"
             " DO UPDATE SET state = EXCLUDED.state", (self.colony, self.id, json.dumps(state, ensure_ascii=False))),
            ("INSERT INTO apiary_worker_runs (colony, session_id, line) VALUES (%s, %s, %s)",
             (self.colony, self.id, json.dumps(line)))])

    async def latest_checkpoint(self) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT body FROM apiary_checkpoints WHERE colony = %s AND session_id = %s ORDER BY n DESC LIMIT 1",
            (self.colony, self.id))
        return json.loads(row[0]) if row else None

    async def write_index(self) -> None:
        return None   # the table is the index


async def list_worker_sessions(db: PgDatabase, colony: str) -> list[str]:
    rows = await db.fetchall("SELECT id FROM apiary_worker_sessions WHERE colony = %s ORDER BY id", (colony,))
    return [r[0] for r in rows]
