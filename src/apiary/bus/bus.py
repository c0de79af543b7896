"""EventBus: append before fan-out; ids are gap-free per session; a subscriber never blocks a
publisher. A subscriber whose buffer is full is marked ``overflowed`` and gets nothing more: its
reader sends a gap frame and the client catches up from the log (SPEC A 4.4).

With a shared database (``remote=True``) events of a session may be written by other processes.
Then delivery is ordered: each subscribed session has a cursor (the last id fanned out here); an
event beyond the cursor is held back and the gap is filled from the log, which a notification
("new events for session X") also triggers. Subscribers thus see every id once, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from apiary.core.clock import Clock, utc_iso
from apiary.core.events import Event, StoredEvent
from apiary.storage.base import EventLog

_CLOSED = object()


class Subscription:
    def __init__(self, session_id: str, queue_size: int) -> None:
        self.session_id = session_id
        self.queue: asyncio.Queue[StoredEvent | object] = asyncio.Queue()
        self._limit = queue_size
        self.overflowed = False
        self.last_delivered: int | None = None

    def offer(self, stored: StoredEvent) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self._limit:
            self.overflowed = True
            self.queue.put_nowait(_CLOSED)
            return
        self.queue.put_nowait(stored)

    def close(self) -> None:
        self.queue.put_nowait(_CLOSED)

    async def get(self, timeout_s: float | None = None) -> StoredEvent | None:
        """The next event; None when the subscription ended. TimeoutError after ``timeout_s``."""
        item = await asyncio.wait_for(self.queue.get(), timeout_s)
        if item is _CLOSED:
            self.queue.put_nowait(_CLOSED)   # keep it closed for later readers
            return None
        assert isinstance(item, StoredEvent)
        return item


class EventBus:
    def __init__(self, log: EventLog, clock: Clock, *, queue_size: int = 1000, remote: bool = False) -> None:
        self.log = log
        self._clock = clock
        self._queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._listeners: list[Callable[[str, StoredEvent], None]] = []
        self.closed = False
        self.remote = remote
        self._cursor: dict[str, int] = {}
        self._held: dict[str, dict[int, StoredEvent]] = {}
        self._filling: dict[str, asyncio.Task[None]] = {}

    def stamp(self, event: Event) -> Event:
        return event if event.timestamp else replace(event, timestamp=self.now_text())

    def now_text(self) -> str:
        """The timestamp events published now get (a publisher building many events at once takes
        one, instead of a copy of each event made by ``stamp``)."""
        return utc_iso(self._clock.now())

    async def publish(self, session_id: str, event: Event) -> StoredEvent:
        return (await self.publish_many(session_id, [event]))[0]

    async def publish_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        return await asyncio.shield(self.post(session_id, events))

    def post(self, session_id: str, events: list[Event]) -> asyncio.Future[list[StoredEvent]]:
        """Publish without waiting: the events are stored, then fanned out, in the order posted.

        For a caller that needs neither the ids nor the commit now: the next write it awaits on the
        same store commits no earlier (SQLite's writer keeps one order for every write), so nothing
        it stores later can be durable while these are not. Fan-out runs in the future's first
        callback, so subscribers see the events before anyone awaiting the future resumes."""
        future = self.log.submit(session_id, [self.stamp(e) for e in events])
        future.add_done_callback(lambda done: self._stored(session_id, done))
        return future

    def _stored(self, session_id: str, done: asyncio.Future[list[StoredEvent]]) -> None:
        if done.cancelled() or done.exception() is not None:
            return   # the poster sees the error (Emitter keeps it for its next emit)
        for stored in done.result():
            self._fan_out(session_id, stored)

    def _fan_out(self, session_id: str, stored: StoredEvent) -> None:
        for listener in self._listeners:
            listener(session_id, stored)
        if not self.remote:
            self._offer(session_id, stored)
            return
        cursor = self._cursor.get(session_id)
        if cursor is None or stored.id <= cursor:
            return
        if stored.id > cursor + 1:
            self._held.setdefault(session_id, {})[stored.id] = stored
            self.fill(session_id)
            return
        self._advance(session_id, stored)

    def _offer(self, session_id: str, stored: StoredEvent) -> None:
        for sub in self._subs.get(session_id, ()):
            sub.offer(stored)

    def _advance(self, session_id: str, stored: StoredEvent) -> None:
        self._offer(session_id, stored)
        self._cursor[session_id] = stored.id
        held = self._held.get(session_id, {})
        while (nxt := held.pop(self._cursor[session_id] + 1, None)) is not None:
            self._offer(session_id, nxt)
            self._cursor[session_id] = nxt.id

    def fill(self, session_id: str | None = None) -> None:
        """Read what the log has beyond the cursor (one reader per session at a time)."""
        targets = [session_id] if session_id is not None else list(self._cursor)
        for sid in targets:
            if sid in self._cursor and sid not in self._filling:
                self._filling[sid] = asyncio.create_task(self._fill(sid), name=f"bus-fill:{sid}")

    async def _fill(self, session_id: str) -> None:
        try:
            while session_id in self._cursor:
                page = await self.log.read(session_id, after=self._cursor[session_id], limit=500)
                for stored in page:
                    if session_id in self._cursor and stored.id == self._cursor[session_id] + 1:
                        self._advance(session_id, stored)
                if len(page) < 500:
                    return
        finally:
            self._filling.pop(session_id, None)

    def add_listener(self, listener: Callable[[str, StoredEvent], None]) -> None:
        """Call ``listener`` synchronously for every published event (must not block)."""
        self._listeners.append(listener)

    @contextlib.asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription(session_id, self._queue_size)
        if self.closed:
            sub.close()
        if self.remote and session_id not in self._cursor:
            self._cursor[session_id] = await self.log.last_id(session_id)
        self._subs.setdefault(session_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(session_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[session_id]
                    self._cursor.pop(session_id, None)
                    self._held.pop(session_id, None)

    def end_session(self, session_id: str) -> None:
        """End every subscription of one session (it was deleted)."""
        for sub in self._subs.get(session_id, ()):
            sub.close()

    def subscriber_count(self, session_id: str) -> int:
        return len(self._subs.get(session_id, ()))

    def on_notification(self, channel: str, payload: str | None) -> None:
        """A notifier callback: new events for session ``payload`` (None: maybe for any)."""
        if payload is None:
            self.fill()
        elif payload in self._cursor:
            self.fill(payload)

    async def close(self) -> None:
        """End every subscription (shutdown)."""
        self.closed = True
        for task in list(self._filling.values()):
            task.cancel()
        for subs in self._subs.values():
            for sub in subs:
                sub.close()
