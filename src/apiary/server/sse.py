"""Server-Sent Events for a session's log (SPEC A 4).

Frames carry ``id:`` and ``data:`` only (gap frames only ``data:``), never ``event:``. The stream
subscribes before it reads the log and skips live events the log read already delivered, so a
client resuming with ``Last-Event-ID`` gets every missed event exactly once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from apiary.bus.bus import EventBus, Subscription
from apiary.core.clock import Clock, utc_iso
from apiary.core.events import REPLAY_TYPES, StoredEvent

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Connection": "keep-alive",
               "X-Accel-Buffering": "no"}
NOISE_EXCEPTIONS = frozenset({"subagent_report", "execution_completed", "execution_failed"})
KEEPALIVE = b": keepalive\n\n"
_PAGE = 1000


def _loop_time() -> float:
    """The event loop's clock: keepalives are about real time on the wire, whatever clock is injected."""
    return asyncio.get_running_loop().time()


def encode(stored: StoredEvent) -> bytes:
    return f"id: {stored.id}\ndata: {stored.json_text}\n\n".encode()


def gap_frame(clock: Clock, last_id: int | None, next_id: int | None, reason: str) -> bytes:
    body = {"type": "gap", "stream_id": None, "node_id": None, "execution_id": None,
            "data": {"last_id": last_id, "next_id": next_id, "reason": reason},
            "timestamp": utc_iso(clock.now()), "correlation_id": None, "colony_id": None}
    return f"data: {json.dumps(body)}\n\n".encode()


def make_filter(types: frozenset[str], *, hide_worker_noise: bool) -> Callable[[StoredEvent], bool]:
    def wanted(stored: StoredEvent) -> bool:
        if stored.type not in types:
            return False
        stream = stored.event.stream_id or ""
        return not (hide_worker_noise and stream.startswith("worker") and stored.type not in NOISE_EXCEPTIONS)

    return wanted


class EventStream:
    def __init__(self, request: web.Request, bus: EventBus, clock: Clock, session_id: str, *,
                 wanted: Callable[[StoredEvent], bool], resume: int | None, keepalive_s: float) -> None:
        self.request, self.bus, self.clock, self.session_id = request, bus, clock, session_id
        self.wanted, self.resume, self.keepalive_s = wanted, resume, keepalive_s
        self.response = web.StreamResponse(headers=SSE_HEADERS)
        self.last_sent: int | None = resume
        self._written_at = _loop_time()

    async def _write(self, data: bytes) -> None:
        await self.response.write(data)
        self._written_at = _loop_time()

    async def _send(self, stored: StoredEvent) -> None:
        await self._send_many([stored])

    async def _send_many(self, events: list[StoredEvent]) -> None:
        """The wanted ones of ``events`` in one write (one ``send`` for every frame ready at once)."""
        if not events:
            return
        frames = [encode(stored) for stored in events if self.wanted(stored)]
        if frames:
            await self._write(b"".join(frames))
        self.last_sent = events[-1].id

    async def run(self) -> web.StreamResponse:
        await self.response.prepare(self.request)
        await self._write(b"retry: 3000\n\n")
        try:
            async with self.bus.subscribe(self.session_id) as sub:
                seen = await self._catch_up()
                await self._live(sub, seen)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return self.response

    async def _catch_up(self) -> int:
        """Write what the log holds for this stream; return the newest id covered."""
        log = self.bus.log
        newest = await log.last_id(self.session_id)
        if self.resume is None:
            # Newer events arrived after ``newest`` was read: they are in the live queue already.
            frames = [encode(stored) for stored in await log.read_tail(self.session_id, 1000)
                      if stored.id <= newest and stored.type in REPLAY_TYPES and self.wanted(stored)]
            if frames:
                await self._write(b"".join(frames))
            return newest
        if self.resume > newest:
            # the connection stays open: the next event it can carry is the one after the newest
            await self._write(gap_frame(self.clock, self.resume, newest + 1, "unknown_last_event_id"))
            return newest
        after = self.resume
        while after < newest:
            page = await log.read(self.session_id, after=after, limit=_PAGE)
            if not page:
                break
            await self._send_many(page)
            after = page[-1].id
        return max(after, newest)

    async def _live(self, sub: Subscription, seen: int) -> None:
        while True:
            # keepalive after ``keepalive_s`` without a write, also while only filtered-out events arrive
            quiet = _loop_time() - self._written_at
            if quiet >= self.keepalive_s:
                await self._write(KEEPALIVE)
                continue
            try:
                stored = await _next(sub, self.keepalive_s - quiet)
            except TimeoutError:
                continue
            ended = stored is None
            if stored is not None:
                # Whatever else is queued already goes out with it, in one write.
                more, ended = _take_ready(sub)
                await self._send_many([e for e in (stored, *more) if e.id > seen])
            if ended:
                if sub.overflowed:
                    await self._write(gap_frame(self.clock, self.last_sent, None, "slow_consumer"))
                return


async def _next(sub: Subscription, timeout_s: float) -> StoredEvent | None:
    """``sub.get(timeout_s)`` without its extra task: the next event, None once the subscription
    ended (its end marker stays queued), TimeoutError after ``timeout_s``."""
    queue = sub.queue
    if queue.empty():
        async with asyncio.timeout(timeout_s):
            item = await queue.get()
    else:
        item = queue.get_nowait()
    if not isinstance(item, StoredEvent):
        queue.put_nowait(item)
        return None
    return item


def _take_ready(sub: Subscription) -> tuple[list[StoredEvent], bool]:
    """The events already in ``sub``'s queue, without waiting, up to its end marker if one is there;
    and whether it was (it stays queued for later readers, as ``Subscription.get`` leaves it)."""
    ready: list[StoredEvent] = []
    queue = sub.queue
    while not queue.empty():
        item = queue.get_nowait()
        if not isinstance(item, StoredEvent):
            queue.put_nowait(item)
            return ready, True
        ready.append(item)
    return ready, False


def parse_resume(request: web.Request) -> int | None:
    raw: Any = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.query.get("last_event_id")
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if not text.isdigit():
        from apiary.core.errors import InvalidRequest

        raise InvalidRequest("Last-Event-ID must be a non-negative integer")
    return int(text)


async def poll_stream(request: web.Request, *, snapshot: Callable[[], Awaitable[str]], closed: Callable[[], bool],
                      period_s: float, keepalive_s: float, event: str | None = None) -> web.StreamResponse:
    """An SSE stream of snapshots: one at connect, then one whenever the text changes (checked every
    ``period_s``), keepalives in between; it ends on disconnect or when ``closed()`` turns true."""
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    prefix = f"event: {event}\n" if event else ""
    last: str | None = None
    quiet = 0.0
    try:
        while not closed():
            text = await snapshot()
            if text != last:
                await response.write(f"{prefix}data: {text}\n\n".encode())
                last, quiet = text, 0.0
            elif quiet >= keepalive_s:
                await response.write(KEEPALIVE)
                quiet = 0.0
            await asyncio.sleep(period_s)
            quiet += period_s
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response
