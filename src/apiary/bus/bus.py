"""EventBus: append before fan-out; ids are gap-free per session; a subscriber never blocks a
publisher. A subscriber whose buffer is full is marked ``overflowed`` and gets nothing more: its
reader sends a gap frame and the client catches up from the log (SPEC A 4.4)."""

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
    def __init__(self, log: EventLog, clock: Clock, *, queue_size: int = 1000) -> None:
        self.log = log
        self._clock = clock
        self._queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._listeners: list[Callable[[str, StoredEvent], None]] = []
        self.closed = False

    def stamp(self, event: Event) -> Event:
        return event if event.timestamp else replace(event, timestamp=utc_iso(self._clock.now()))

    async def publish(self, session_id: str, event: Event) -> StoredEvent:
        stored = await self.log.append(session_id, self.stamp(event))
        self._fan_out(session_id, stored)
        return stored

    async def publish_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        stored = await self.log.append_many(session_id, [self.stamp(e) for e in events])
        for s in stored:
            self._fan_out(session_id, s)
        return stored

    def _fan_out(self, session_id: str, stored: StoredEvent) -> None:
        for sub in self._subs.get(session_id, ()):
            sub.offer(stored)
        for listener in self._listeners:
            listener(session_id, stored)

    def add_listener(self, listener: Callable[[str, StoredEvent], None]) -> None:
        """Call ``listener`` synchronously for every published event (must not block)."""
        self._listeners.append(listener)

    @contextlib.asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription(session_id, self._queue_size)
        if self.closed:
            sub.close()
        self._subs.setdefault(session_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(session_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[session_id]

    def end_session(self, session_id: str) -> None:
        """End every subscription of one session (it was deleted)."""
        for sub in self._subs.get(session_id, ()):
            sub.close()

    def subscriber_count(self, session_id: str) -> int:
        return len(self._subs.get(session_id, ()))

    async def close(self) -> None:
        """End every subscription (shutdown)."""
        self.closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub.close()
