"""apiary.db's writer: queued writes share one transaction and one thread call, in order; a write that
fails is undone alone; posted events are durable once a later awaited write is."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from apiary.agent.emitter import Emitter
from apiary.bus.bus import EventBus
from apiary.core.clock import SystemClock
from apiary.core.events import Event
from apiary.storage.sqlite.stores import SqliteStores


@pytest.fixture
async def stores(tmp_path: Path):
    s = await SqliteStores.open(tmp_path / "apiary.db")
    yield s
    await s.aclose()


def rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_writes_queued_together_share_one_batch_and_keep_their_order(stores, tmp_path):
    writer = stores.db.writer
    before = writer.batches
    msgs = [{"seq": i, "role": "user", "content": f"m{i}"} for i in range(1, 6)]
    results = await asyncio.gather(*(stores.conversations.append_message("o", m) for m in msgs),
                                   stores.events.append_many("s", [Event(type="x", data={"n": 1})]))
    assert writer.batches == before + 1          # six writes, one transaction, one thread call
    assert [s.id for s in results[-1]] == [1]
    assert [m["content"] for m in (await stores.conversations.load("o")).messages] == ["m1", "m2", "m3", "m4", "m5"]


async def test_a_failing_write_is_undone_alone(stores, tmp_path):
    good = stores.db.writer.write([("INSERT INTO conv_messages (owner, seq, body) VALUES (?, ?, ?)", ("o", 1, "{}"))])
    bad = stores.db.writer.write([
        ("INSERT INTO conv_messages (owner, seq, body) VALUES (?, ?, ?)", ("o", 2, "{}")),
        ("INSERT INTO no_such_table VALUES (1)", ())])
    after = stores.db.writer.write([("INSERT INTO conv_messages (owner, seq, body) VALUES (?, ?, ?)", ("o", 3, "{}"))])
    outcomes = await asyncio.gather(good, bad, after, return_exceptions=True)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], sqlite3.OperationalError)
    assert rows(tmp_path / "apiary.db", "SELECT seq FROM conv_messages ORDER BY seq") == [(1,), (3,)]


async def test_posted_events_are_stored_once_a_later_awaited_write_returns(stores, tmp_path):
    bus = EventBus(stores.events, SystemClock())
    emitter = Emitter(bus, "s", stream_id="default", node_id="worker", execution_id="e")
    seen: list[int] = []
    bus.add_listener(lambda sid, stored: seen.append(stored.id))
    for n in range(3):
        emitter.post("tool_call_started", {"n": n})
    await stores.conversations.append_message("o", {"seq": 1, "role": "user", "content": "x"})
    # Read with another connection: committed, not merely queued.
    assert [r[0] for r in rows(tmp_path / "apiary.db", "SELECT id FROM events WHERE session_id = 's'")] == [1, 2, 3]
    assert seen == [1, 2, 3]                     # fanned out in id order, before the awaiting caller resumed
    await emitter.settle()


async def test_a_posted_event_that_fails_is_raised_by_the_next_emit(stores):
    bus = EventBus(stores.events, SystemClock())
    emitter = Emitter(bus, "s", stream_id="default", node_id="worker", execution_id="e")
    await stores.db.execute("DROP TABLE events")   # every append fails from here on
    emitter.post("custom", {"n": 1})
    with pytest.raises(sqlite3.OperationalError):
        await emitter.settle()
    emitter.post("custom", {"n": 2})
    await asyncio.sleep(0.05)
    with pytest.raises(sqlite3.OperationalError):
        await emitter.emit("custom", {"n": 3})
