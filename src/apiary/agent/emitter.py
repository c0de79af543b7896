"""Publishes a loop's events with its envelope (stream, node, execution, colony, run) filled in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
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

    def event(self, type_: str, data: dict[str, Any]) -> Event:
        return Event(type=type_, data=data, stream_id=self.stream_id, node_id=self.node_id,
                     execution_id=self.execution_id, colony_id=self.colony_id, run_id=self.run_id)

    async def emit(self, type_: str, data: dict[str, Any]) -> StoredEvent | None:
        if self.muted:
            return None
        # Shielded: a cancel arriving mid-append must not leave the log's id counter behind the
        # row already written (the next append would then reuse the id).
        return await asyncio.shield(self.bus.publish(self.session_id, self.event(type_, data)))

    async def emit_many(self, items: list[tuple[str, dict[str, Any]]], *, shield: bool = True) -> list[StoredEvent]:
        """Several events at once, in order: one append to the log (one transaction) for all of them.
        ``shield=False`` is for a caller that is itself never cancelled (a task of its own)."""
        if self.muted or not items:
            return []
        publish = self.bus.publish_many(self.session_id, [self.event(t, d) for t, d in items])
        return await (asyncio.shield(publish) if shield else publish)
