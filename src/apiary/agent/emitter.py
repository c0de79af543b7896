"""Publishes a loop's events with its envelope (stream, node, execution, colony, run) filled in.

``post`` is for the events of a loop's hot path (iteration and tool-call events): they are queued
for storage and fan-out in order without the loop waiting for their commit; the loop's next awaited
write (a message, the cursor) commits no earlier, and a posted event that fails to store is raised
by the next ``emit``, ``post`` or ``settle``, so no failure goes unseen."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from apiary.bus.bus import EventBus
from apiary.core.events import Event, StoredEvent


@dataclass
class Emitter:
    bus: EventBus
    session_id: str
    stream_id: str
    node_id: str
    execution_id: str
    colony_id: str | None = None
    run_id: str | None = None
    muted: bool = False   # set once the run's final event is out: nothing of it may follow
    _failed: BaseException | None = field(default=None, repr=False)
    _posted: asyncio.Future[list[StoredEvent]] | None = field(default=None, repr=False)

    def event(self, type_: str, data: dict[str, Any], timestamp: str = "") -> Event:
        return Event(type=type_, data=data, stream_id=self.stream_id, node_id=self.node_id,
                     execution_id=self.execution_id, colony_id=self.colony_id, run_id=self.run_id,
                     timestamp=timestamp)

    def post(self, type_: str, data: dict[str, Any]) -> None:
        self.post_many([(type_, data)])

    def post_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        self.raise_failed()
        if self.muted or not items:
            return
        now = self.bus.now_text()   # one timestamp for the burst
        future = self.bus.post(self.session_id, [self.event(t, d, now) for t, d in items])
        future.add_done_callback(self._note)
        self._posted = future

    def _note(self, done: asyncio.Future[list[StoredEvent]]) -> None:
        if self._posted is done:
            self._posted = None
        if not done.cancelled() and done.exception() is not None and self._failed is None:
            self._failed = done.exception()

    def raise_failed(self) -> None:
        """Raise the failure of a posted event, once."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    async def settle(self) -> None:
        """Until every posted event is stored; raises a posted event's failure."""
        if self._posted is not None:
            await asyncio.wait([self._posted])
        self.raise_failed()

    async def emit(self, type_: str, data: dict[str, Any]) -> StoredEvent | None:
        self.raise_failed()
        if self.muted:
            return None
        # Shielded: a cancel arriving mid-append must not leave the log's id counter behind the
        # row already written (the next append would then reuse the id).
        return await asyncio.shield(self.bus.publish(self.session_id, self.event(type_, data)))

    async def emit_many(self, items: list[tuple[str, dict[str, Any]]], *, shield: bool = True) -> list[StoredEvent]:
        """Several events at once, in order: one append to the log (one transaction) for all of them.
        ``shield=False`` is for a caller that is itself never cancelled (a task of its own)."""
        self.raise_failed()
        if self.muted or not items:
            return []
        publish = self.bus.publish_many(self.session_id, [self.event(t, d) for t, d in items])
        return await (asyncio.shield(publish) if shield else publish)
