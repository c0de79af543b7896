"""The event log in apiary.db, with group commit.

Appends queue up while a write is in flight, and the next write takes them all in one transaction
(one ``executemany``), so many publishers share one commit instead of waiting for one each. Ids
come from a per-session counter kept in memory after the first read and are assigned in queue
order inside the writer, so they stay gap-free; the counter only advances once the rows are
committed. The writer runs in a task of its own: a publisher cancelled while waiting cannot
leave a written row behind an unadvanced counter.

Bounded: the counters are a cache of ``MAX(id)`` (at most ``LAST_CACHE`` sessions, least recently
used dropped, always under the lock); a read of more than ``DECODE_INLINE_ROWS`` rows decodes its JSON
in a worker thread, so a long history never holds the event loop for the whole parse.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict

from apiary.core.events import Event, StoredEvent
from apiary.storage.base import EventLog
from apiary.storage.sqlite.database import Database

_INSERT = "INSERT INTO events (session_id, id, type, body) VALUES (?, ?, ?, ?)"
LAST_CACHE = 1024          # sessions whose last id is kept in memory
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


class SqliteEventLog(EventLog):
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._last: OrderedDict[str, int] = OrderedDict()   # only touched under ``_lock``
        self._queue: list[tuple[str, list[Event], asyncio.Future[list[StoredEvent]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def _last_locked(self, session_id: str) -> int:
        last = self._last.get(session_id)
        if last is None:
            row = await self._db.fetchone("SELECT MAX(id) FROM events WHERE session_id = ?", (session_id,))
            last = int(row[0] or 0)
        self._remember(session_id, last)
        return last

    def _remember(self, session_id: str, last: int) -> None:
        self._last[session_id] = last
        self._last.move_to_end(session_id)
        while len(self._last) > LAST_CACHE:
            self._last.popitem(last=False)

    async def append(self, session_id: str, event: Event) -> StoredEvent:
        return (await self.append_many(session_id, [event]))[0]

    async def append_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        self._queue.append((session_id, events, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="event-log-writer")
        return await asyncio.shield(future)

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            async with self._lock:
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[tuple[str, list[Event], asyncio.Future[list[StoredEvent]]]]) -> None:
        next_id: dict[str, int] = {}
        results: list[list[StoredEvent]] = []
        try:
            for session_id, events, _ in batch:
                first = next_id.get(session_id, await self._last_locked(session_id)) + 1
                results.append([StoredEvent.of(first + i, e) for i, e in enumerate(events)])
                next_id[session_id] = first + len(events) - 1
            rows = [(sid, s.id, s.type, s.json_text) for (sid, _, _), stored in zip(batch, results, strict=True)
                    for s in stored]
            await self._db.insert_many(_INSERT, rows)
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("event log closed"))
            if not isinstance(exc, Exception):
                raise
            return
        for session_id, last in next_id.items():
            self._remember(session_id, last)
        for (_, _, future), stored in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(stored)

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
