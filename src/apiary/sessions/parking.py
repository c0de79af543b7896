"""Parking idle live sessions (SPEC C.6): their objects leave memory, their id stays live.

A live session nobody has used for ``sessions.park_idle_s`` is stopped like at shutdown (queen loop
task ended, colony closed, model client closed) and replaced by a ``ParkedSession``, a light record
that keeps it listed as live. ``SessionManager.get_live`` restores it from storage on first use,
with the same id, phase, conversation and event log. Its ``meta.json`` never gets ``ended_at``.

Idle means: no request naming it is running (streams included, see ``in_use``), nobody is
subscribed to its events, no event and no request for ``park_idle_s``, the queen is not in a turn
and has nothing in her inbox, no fork compaction of it is running, and its colony, if any, has no
running execution and no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apiary.core.events import StoredEvent
from apiary.core.messages import JsonObject

if TYPE_CHECKING:
    from apiary.sessions.manager import SessionManager
    from apiary.sessions.session import Session

logger = logging.getLogger(__name__)
COMPACTION_STATUS = "colony_compaction_status"


@dataclass(frozen=True)
class ParkedSession:
    session_id: str
    queen_id: str
    loaded_at: float
    colony_path: str | None
    snapshot: JsonObject            # the session object of SPEC A 3.1 when it was parked

    def to_json(self, now: float) -> JsonObject:
        return {**self.snapshot, "uptime_seconds": round(now - self.loaded_at, 1)}


def _colony_busy(colony: Any) -> bool:
    timers = colony.timers
    return bool(colony.active() or timers.triggers or timers.entry_next)


class Parking:
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.records: dict[str, ParkedSession] = {}
        self._in_use: Counter[str] = Counter()
        self._compacting: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        manager.deps.bus.add_listener(self._on_event)

    @property
    def idle_s(self) -> float:
        return self.manager.deps.settings.sessions.park_idle_s

    # -- activity --------------------------------------------------------------------------------

    def _on_event(self, session_id: str, stored: StoredEvent) -> None:
        session = self.manager.live.get(session_id)
        if session is not None:
            session.touch()
        data = stored.event.data if stored.type == "custom" else None
        if isinstance(data, dict) and data.get("name") == COMPACTION_STATUS:
            if data.get("status") == "in_progress":
                self._compacting[session_id] += 1
            elif self._compacting[session_id] > 0:
                self._compacting[session_id] -= 1
            if self._compacting[session_id] <= 0:
                del self._compacting[session_id]

    @contextlib.contextmanager
    def in_use(self, session_id: str) -> Iterator[None]:
        """A request naming the session runs: it is not idle meanwhile, and used when it ends."""
        self._in_use[session_id] += 1
        try:
            yield
        finally:
            self._in_use[session_id] -= 1
            if self._in_use[session_id] <= 0:
                del self._in_use[session_id]
            session = self.manager.live.get(session_id)
            if session is not None:
                session.touch()

    def is_idle(self, session: Session) -> bool:
        sid = session.id
        if self._in_use.get(sid) or self._compacting.get(sid) or self.manager.deps.bus.subscriber_count(sid):
            return False
        if self.manager.deps.clock.monotonic() - session.last_used < self.idle_s:
            return False
        loop = session.queen.loop
        if loop is not None and (loop.in_turn or loop.ctx.has_items()):
            return False
        return session.colony is None or not _colony_busy(session.colony)

    # -- parking and restoring -------------------------------------------------------------------

    async def park(self, session: Session) -> bool:
        """Park one idle session; False when it is gone or no longer idle."""
        manager = self.manager
        async with manager._lock(session.id):
            if manager.live.get(session.id) is not session or not self.is_idle(session):
                return False
            colony = session.colony
            self.records[session.id] = ParkedSession(
                session_id=session.id, queen_id=session.queen_id, loaded_at=session.loaded_at,
                colony_path=str(colony.path) if colony is not None else None, snapshot=session.to_json())
            del manager.live[session.id]
            try:
                await manager._stop(session)
            except Exception:
                logger.exception("stopping session %s for parking failed", session.id)
        logger.info("parked idle session %s", session.id)
        return True

    async def park_idle(self) -> list[str]:
        parked = []
        for session in [s for s in self.manager.live.values() if self.is_idle(s)]:
            if await self.park(session):
                parked.append(session.id)
        return parked

    def restored(self, session: Session) -> None:
        """``session`` was just restored from its parked record: it keeps its ``loaded_at``."""
        record = self.records.pop(session.id, None)
        if record is not None:
            session.loaded_at = record.loaded_at

    def forget(self, session_id: str) -> ParkedSession | None:
        return self.records.pop(session_id, None)

    # -- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and self.idle_s > 0:
            self._task = self.manager.deps.tasks.spawn(self._run(), name="session-parking")

    async def _run(self) -> None:
        period = max(0.05, min(self.idle_s / 4, 60.0))
        while True:
            await asyncio.sleep(period)
            try:
                await self.park_idle()
            except Exception:
                logger.exception("parking idle sessions failed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
