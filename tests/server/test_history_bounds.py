"""``GET /api/sessions/{id}/events/history`` without ``after`` reads the log in bounded pieces
(docs/reliability.md, section 5): the soak's history read decoded and collapsed the whole log of a
queen on every call (22,600 events after 10 minutes, for a page of 50), which held the event loop
and made the process's memory peak grow with the log. The answer must stay what collapsing the
whole log gives.
"""

from __future__ import annotations

import random

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from apiary.core.events import Event, StoredEvent, collapse_text_deltas, delta_key
from apiary.server.routes import events as history_route
from apiary.server.state import APP_STATE
from apiary.storage.base import COUNT_PAGE, EventLog
from apiary.storage.memory import MemoryEventLog


class RecordingLog(MemoryEventLog):
    """The memory log, remembering the largest read it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    async def read(self, session_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        rows = await super().read(session_id, after=after, limit=limit)
        self.largest = max(self.largest, len(rows))
        return rows

    async def read_tail(self, session_id: str, limit: int) -> list[StoredEvent]:
        rows = await super().read_tail(session_id, limit)
        self.largest = max(self.largest, len(rows))
        return rows


def streamed_reply(turn: int, deltas: int, *, execution: str = "s1") -> list[Event]:
    """What a queen's turn leaves in the log: text deltas (one key per turn), then other events."""
    out = [Event(type="llm_text_delta", data={"content": "x" * (i + 1), "iteration": turn, "inner_turn": 0},
                 stream_id="queen", node_id="queen", execution_id=execution) for i in range(deltas)]
    out.append(Event(type="client_output_delta", data={"snapshot": "hi", "iteration": turn}, stream_id="queen",
                     node_id="queen", execution_id=execution))
    out.append(Event(type="llm_turn_complete", data={"iteration": turn}, stream_id="queen", node_id="queen",
                     execution_id=execution))
    return out


async def filled(log: EventLog, turns: int, seed: int = 3) -> list[StoredEvent]:
    rng = random.Random(seed)
    for turn in range(turns):
        # now and then a key comes back much later (a reused execution id starting again at iteration 0)
        iteration = turn if rng.random() > 0.1 else rng.randrange(0, turn + 1)
        await log.append_many("s1", streamed_reply(iteration, rng.randrange(0, 30)))
    return await log.read("s1")


def delta_event(key: int) -> StoredEvent:
    return StoredEvent.of(1, Event(type="llm_text_delta", data={"iteration": key}, stream_id="queen"))


def test_the_count_and_the_collapse_agree_on_what_a_delta_key_is() -> None:
    a, b = delta_event(1), delta_event(2)
    assert len(collapse_text_deltas([a, delta_event(1)])) == 1 and delta_key(a) == delta_key(delta_event(1))
    assert len(collapse_text_deltas([a, b])) == 2 and delta_key(a) != delta_key(b)


async def test_the_tail_page_and_the_total_are_those_of_the_whole_log() -> None:
    log = MemoryEventLog()
    everything = await filled(log, 400)
    collapsed = collapse_text_deltas(everything)
    for limit in (1, 7, 50, 333, 2000, 10000):
        page = await history_route.tail_page(log, "s1", limit)
        assert [s.id for s in page] == [s.id for s in collapsed[-limit:]], limit
    assert await log.count_collapsed("s1", upto=everything[-1].id) == len(collapsed)
    # counted up to an id: what the log held then
    upto = everything[len(everything) // 2].id
    assert await log.count_collapsed("s1", upto=upto) == len(collapse_text_deltas(everything[:upto]))
    assert await history_route.tail_page(log, "empty", 50) == []


async def test_a_page_of_the_history_never_reads_the_whole_log() -> None:
    log = RecordingLog()
    everything = await filled(log, 600)
    assert len(everything) > 5 * COUNT_PAGE
    log.largest = 0
    app = web.Application()
    app.router.add_get("/api/sessions/{session_id}/events/history", history_route.history)
    app[APP_STATE] = _State(log)   # type: ignore[assignment]  # the route only reads state.bus.log
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/api/sessions/s1/events/history", params={"limit": "50"})).json()
    collapsed = collapse_text_deltas(everything)
    assert [e["id"] for e in body["events"]] == [s.id for s in collapsed[-50:]]
    assert body["total"] == len(collapsed) and body["returned"] == 50 and body["truncated"] is True
    assert log.largest <= COUNT_PAGE, f"one read returned {log.largest} of {len(everything)} events"


class _Bus:
    def __init__(self, log: EventLog) -> None:
        self.log = log


class _State:
    def __init__(self, log: EventLog) -> None:
        self.bus = _Bus(log)
