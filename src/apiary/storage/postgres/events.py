"""The event log on PostgreSQL. Ids are gap-free across hosts: a per-session head row is bumped
under its row lock in the same transaction that inserts the events, so appends to one session
commit in id order; the transaction also sends ``NOTIFY apiary_events, '<session id>'``."""

from __future__ import annotations

import json

from apiary.core.events import Event, StoredEvent
from apiary.storage.base import EventLog
from apiary.storage.postgres.database import PgDatabase

CHANNEL = "apiary_events"
_BUMP = ("INSERT INTO apiary_event_heads (session_id, last_id) VALUES (%s, %s) ON CONFLICT (session_id)"
         " DO UPDATE SET last_id = apiary_event_heads.last_id + EXCLUDED.last_id RETURNING last_id")
_DELTAS = "('client_output_delta', 'llm_text_delta')"   # core.events.TEXT_DELTA_TYPES
# As the SQLite log's: every other event plus one per delta key; JSON null is taken as missing.
_KEY = ", ".join(f"NULLIF(body::jsonb #> '{{{path}}}', 'null'::jsonb)"
                 for path in ("stream_id", "node_id", "execution_id", "data,iteration", "data,inner_turn"))
_COUNT_COLLAPSED = (
    f"SELECT (SELECT COUNT(*) FROM apiary_events WHERE session_id = %s AND id <= %s AND type NOT IN {_DELTAS})"
    f" + (SELECT COUNT(*) FROM (SELECT DISTINCT type, {_KEY} FROM apiary_events"
    f" WHERE session_id = %s AND id <= %s AND type IN {_DELTAS}) AS k)")


def _row(row: tuple[int, str]) -> StoredEvent:
    return StoredEvent(int(row[0]), Event.from_wire(json.loads(row[1])), row[1])


class PgEventLog(EventLog):
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def append(self, session_id: str, event: Event) -> StoredEvent:
        return (await self.append_many(session_id, [event]))[0]

    async def append_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        async with self._db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_BUMP, (session_id, len(events)))
            row = await cur.fetchone()
            assert row is not None
            first = int(row[0]) - len(events) + 1
            stored = [StoredEvent.of(first + i, e) for i, e in enumerate(events)]
            async with conn.cursor() as c:
                await c.executemany("INSERT INTO apiary_events (session_id, id, type, body) VALUES (%s, %s, %s, %s)",
                                    [(session_id, s.id, s.type, s.json_text) for s in stored])
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, session_id))
        return stored

    async def read(self, session_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            "SELECT id, body FROM apiary_events WHERE session_id = %s AND id > %s ORDER BY id LIMIT %s",
            (session_id, after, limit))
        return [_row(r) for r in rows]

    async def read_tail(self, session_id: str, limit: int) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            "SELECT id, body FROM apiary_events WHERE session_id = %s ORDER BY id DESC LIMIT %s", (session_id, limit))
        return [_row(r) for r in reversed(rows)]

    async def count_collapsed(self, session_id: str, *, upto: int | None = None) -> int:
        upto = (1 << 62) if upto is None else upto
        row = await self._db.fetchone(_COUNT_COLLAPSED, (session_id, upto, session_id, upto))
        return int(row[0] or 0) if row else 0

    async def last_id(self, session_id: str) -> int:
        row = await self._db.fetchone("SELECT last_id FROM apiary_event_heads WHERE session_id = %s", (session_id,))
        return int(row[0]) if row else 0

    async def delete_session(self, session_id: str) -> None:
        await self._db.transaction([("DELETE FROM apiary_events WHERE session_id = %s", (session_id,)),
                                    ("DELETE FROM apiary_event_heads WHERE session_id = %s", (session_id,))])

    async def copy_session(self, source: str, target: str) -> None:
        await self._db.transaction([
            ("DELETE FROM apiary_events WHERE session_id = %s", (target,)),
            ("DELETE FROM apiary_event_heads WHERE session_id = %s", (target,)),
            ("INSERT INTO apiary_events (session_id, id, type, body) SELECT %s, id, type, body FROM apiary_events"
             " WHERE session_id = %s", (target, source)),
            ("INSERT INTO apiary_event_heads (session_id, last_id) SELECT %s, last_id FROM apiary_event_heads"
             " WHERE session_id = %s", (target, source)),
        ])
