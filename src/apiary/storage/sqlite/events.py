"""The event log in apiary.db. Ids come from a per-session counter kept in memory after the
first read, assigned and written under one lock, so appends from many tasks stay gap-free."""

from __future__ import annotations

import asyncio
import json

from apiary.core.events import Event, StoredEvent
from apiary.storage.base import EventLog
from apiary.storage.sqlite.database import Database


def _row_to_event(row: tuple[int, str]) -> StoredEvent:
    event_id, body = row
    return StoredEvent(event_id, Event.from_wire(json.loads(body)), body)


class SqliteEventLog(EventLog):
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._last: dict[str, int] = {}

    async def _last_locked(self, session_id: str) -> int:
        if session_id not in self._last:
            row = await self._db.fetchone("SELECT MAX(id) FROM events WHERE session_id = ?", (session_id,))
            self._last[session_id] = int(row[0] or 0)
        return self._last[session_id]

    async def append(self, session_id: str, event: Event) -> StoredEvent:
        return (await self.append_many(session_id, [event]))[0]

    async def append_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        # Shielded: a caller cancelled mid-append must not leave a written row behind an unadvanced counter.
        return await asyncio.shield(self._append_locked(session_id, events))

    async def _append_locked(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        async with self._lock:
            last = await self._last_locked(session_id)
            stored = [StoredEvent.of(last + i, e) for i, e in enumerate(events, start=1)]
            rows = [(session_id, s.id, s.type, s.json_text) for s in stored]
            if len(rows) == 1:
                await self._db.execute("INSERT INTO events (session_id, id, type, body) VALUES (?, ?, ?, ?)", rows[0])
            else:
                await self._db.transaction(
                    [("INSERT INTO events (session_id, id, type, body) VALUES (?, ?, ?, ?)", r) for r in rows]
                )
            self._last[session_id] = last + len(stored)
            return stored

    async def read(self, session_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            "SELECT id, body FROM events WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?",
            (session_id, after, -1 if limit is None else limit),
        )
        return [_row_to_event(r) for r in rows]

    async def read_tail(self, session_id: str, limit: int) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            "SELECT id, body FROM events WHERE session_id = ? ORDER BY id DESC LIMIT ?", (session_id, limit)
        )
        return [_row_to_event(r) for r in reversed(rows)]

    async def last_id(self, session_id: str) -> int:
        async with self._lock:
            return await self._last_locked(session_id)

    async def delete_session(self, session_id: str) -> None:
        async with self._lock:
            await self._db.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            self._last.pop(session_id, None)

    async def copy_session(self, source: str, target: str) -> None:
        async with self._lock:
            await self._db.transaction(
                [
                    ("DELETE FROM events WHERE session_id = ?", (target,)),
                    (
                        "INSERT INTO events (session_id, id, type, body) SELECT ?, id, type, body FROM events"
                        " WHERE session_id = ?",
                        (target, source),
                    ),
                ]
            )
            self._last.pop(target, None)
