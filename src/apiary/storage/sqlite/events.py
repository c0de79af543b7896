"""The event log in apiary.db, written through the database's writer (writer.py).

An append is one write of the writer's batches: its ids are assigned in the connection's thread,
inside the batch's transaction, from ``MAX(id)`` of the session (one index lookup per session and
batch) and the appends before it in the same batch. An append that fails is rolled back to its
savepoint and the next one takes its ids, so ids stay gap-free and are never reused, with no
counter in memory to fall behind the table. The JSON text of each event is built there too, off
the event loop. Fan-out happens in the futures' callbacks, which the writer settles in order.

Bounded: a read of more than ``DECODE_INLINE_ROWS`` rows decodes its JSON in a worker thread, so a
long history never holds the event loop for the whole parse.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from apiary.core.events import Event, StoredEvent
from apiary.storage.base import EventLog
from apiary.storage.sqlite.database import Database
from apiary.storage.sqlite.writer import Statements, StatementsWrite, settle

_INSERT = "INSERT INTO events (session_id, id, type, body) VALUES (?, ?, ?, ?)"
_MAX_ID = "SELECT MAX(id) FROM events WHERE session_id = ?"
_DELTAS = "('client_output_delta', 'llm_text_delta')"   # core.events.TEXT_DELTA_TYPES (a test holds them equal)
# The events once text deltas are collapsed: every other event, plus one per delta key (as
# core.events.delta_key; json_extract gives NULL for a missing field and for JSON null alike).
_COUNT_COLLAPSED = (
    f"SELECT (SELECT COUNT(*) FROM events WHERE session_id = ? AND id <= ? AND type NOT IN {_DELTAS})"
    " + (SELECT COUNT(*) FROM (SELECT DISTINCT type, json_extract(body, '$.stream_id'),"
    " json_extract(body, '$.node_id'), json_extract(body, '$.execution_id'),"
    " json_extract(body, '$.data.iteration'), json_extract(body, '$.data.inner_turn')"
    f" FROM events WHERE session_id = ? AND id <= ? AND type IN {_DELTAS}))")
DECODE_INLINE_ROWS = 256   # larger reads are decoded off the event loop


def _row_to_event(row: tuple[int, str]) -> StoredEvent:
    event_id, body = row
    return StoredEvent(event_id, Event.from_wire(json.loads(body)), body)


def _rows_to_events(rows: list[tuple[int, str]]) -> list[StoredEvent]:
    return [_row_to_event(r) for r in rows]


async def _decode(rows: list[tuple[int, str]]) -> list[StoredEvent]:
    if len(rows) <= DECODE_INLINE_ROWS:
        return _rows_to_events(rows)
    return await asyncio.to_thread(_rows_to_events, rows)


class _Append:
    """One append, as a write of the writer's batch."""

    __slots__ = ("events", "future", "session_id")

    def __init__(self, session_id: str, events: list[Event], future: asyncio.Future[list[StoredEvent]]) -> None:
        self.session_id = session_id
        self.events = events
        self.future = future

    def run(self, conn: sqlite3.Connection, batch: dict[str, Any]) -> list[StoredEvent]:
        last_ids: dict[str, int] = batch.setdefault("event_ids", {})
        last = last_ids.get(self.session_id)
        if last is None:
            last = int(conn.execute(_MAX_ID, (self.session_id,)).fetchone()[0] or 0)
        stored = [StoredEvent.of(last + 1 + i, e) for i, e in enumerate(self.events)]
        conn.executemany(_INSERT, [(self.session_id, s.id, s.type, s.json_text) for s in stored])
        last_ids[self.session_id] = stored[-1].id   # only once the rows are in
        return stored

    def done(self, ok: bool, value: Any) -> None:
        settle(self.future, ok, value)


class _Rewrite(StatementsWrite):
    """Statements that change a session's rows: later appends of the batch read its MAX(id) again."""

    __slots__ = ("session_id",)

    def __init__(self, session_id: str, statements: Statements, future: asyncio.Future[None]) -> None:
        super().__init__(statements, future)
        self.session_id = session_id

    def run(self, conn: sqlite3.Connection, batch: dict[str, Any]) -> None:
        batch.get("event_ids", {}).pop(self.session_id, None)
        super().run(conn, batch)


class SqliteEventLog(EventLog):
    def __init__(self, db: Database) -> None:
        self._db = db

    def orders_before(self, store: object) -> bool:
        return getattr(store, "writer_db", None) is self._db   # the same database: the same writer

    def submit(self, session_id: str, events: list[Event]) -> asyncio.Future[list[StoredEvent]]:
        future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        if not events:
            future.set_result([])
        else:
            self._db.writer.submit(_Append(session_id, list(events), future))
        return future

    async def append(self, session_id: str, event: Event) -> StoredEvent:
        return (await self.append_many(session_id, [event]))[0]

    async def append_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        return await self.submit(session_id, events)   # a cancelled caller leaves the append queued

    async def _rewrite(self, session_id: str, statements: Statements) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._db.writer.submit(_Rewrite(session_id, statements, future))
        await asyncio.shield(future)

    async def read(self, session_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            "SELECT id, body FROM events WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?",
            (session_id, after, -1 if limit is None else limit),
        )
        return await _decode(rows)

    async def read_tail(self, session_id: str, limit: int) -> list[StoredEvent]:
        rows = await self._db.fetchall(
            "SELECT id, body FROM events WHERE session_id = ? ORDER BY id DESC LIMIT ?", (session_id, limit)
        )
        rows.reverse()
        return await _decode(rows)

    async def count_collapsed(self, session_id: str, *, upto: int | None = None) -> int:
        upto = (1 << 62) if upto is None else upto
        row = await self._db.fetchone(_COUNT_COLLAPSED, (session_id, upto, session_id, upto))
        return int(row[0] or 0)

    async def last_id(self, session_id: str) -> int:
        row = await self._db.fetchone(_MAX_ID, (session_id,))
        return int(row[0] or 0)

    async def delete_session(self, session_id: str) -> None:
        await self._rewrite(session_id, [("DELETE FROM events WHERE session_id = ?", (session_id,))])

    async def copy_session(self, source: str, target: str) -> None:
        await self._rewrite(target, [
            ("DELETE FROM events WHERE session_id = ?", (target,)),
            ("INSERT INTO events (session_id, id, type, body) SELECT ?, id, type, body FROM events"
             " WHERE session_id = ?", (target, source)),
        ])
