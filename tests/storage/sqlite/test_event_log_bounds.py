"""The SQLite event log keeps bounded state and does not parse long reads on the event loop.

Found by the soak: the per-session id counters kept one entry for every session that ever wrote an
event (ids now come from ``MAX(id)`` inside each write batch, nothing is kept), and a history read
of a long log decoded every row's JSON on the loop thread, 100-300 ms per request late in the soak.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from apiary.core.events import Event
from apiary.storage.sqlite import events as sqlite_events
from apiary.storage.sqlite.database import Database
from apiary.storage.sqlite.events import SqliteEventLog


@pytest.fixture
async def log(tmp_path: Path):
    db = await Database.open(tmp_path / "apiary.db")
    yield SqliteEventLog(db)
    await db.close()


def ev(n: int) -> Event:
    return Event(type="node_internal_output", data={"n": n}, stream_id="queen", timestamp="2026-01-01T00:00:00Z")


async def test_the_log_keeps_no_state_per_session(log):
    for i in range(30):
        await log.append(f"s{i}", ev(0))
    for i in range(30):
        stored = await log.append_many(f"s{i}", [ev(1), ev(2)])
        assert [s.id for s in stored] == [2, 3]
        assert await log.last_id(f"s{i}") == 3
    assert [s.id for s in await log.read("s0")] == [1, 2, 3]
    assert not [k for k, v in vars(log).items() if isinstance(v, dict | list) and v]


async def test_a_deleted_session_starts_again_at_one_even_within_one_batch(log):
    await log.append("gone", ev(0))
    first = log.submit("gone", [ev(1)])
    deleted = asyncio.ensure_future(log.delete_session("gone"))
    await asyncio.sleep(0)                          # the delete is queued, the writer has taken ``first``
    again = log.submit("gone", [ev(2)])             # ... so the delete and this land in one batch
    writes_before = log._db.writer.batches
    assert [s.id for s in await first] == [2]
    await deleted
    assert [s.id for s in await again] == [1]
    assert log._db.writer.batches == writes_before + 1
    assert [(s.id, s.event.data["n"]) for s in await log.read("gone")] == [(1, 2)]


async def test_a_failed_append_leaves_no_gap_and_the_next_one_takes_its_ids(log, monkeypatch):
    await log.append("s", ev(0))
    bad = Event(type="x", data={"n": float("nan")}, stream_id="queen", timestamp="t")
    orig = sqlite_events.StoredEvent.of

    def refuse_nan(event_id, event):
        if event.data.get("n") != event.data.get("n"):
            raise ValueError("refused")
        return orig(event_id, event)

    monkeypatch.setattr(sqlite_events.StoredEvent, "of", staticmethod(refuse_nan))
    failing = log.submit("s", [ev(1), bad])       # one batch: the failure is rolled back alone
    after = log.submit("s", [ev(2)])
    with pytest.raises(ValueError):
        await failing
    assert [s.id for s in await after] == [2]
    assert [s.event.data["n"] for s in await log.read("s")] == [0, 2]


async def test_a_long_read_is_decoded_off_the_event_loop(log, monkeypatch):
    await log.append_many("long", [ev(n) for n in range(sqlite_events.DECODE_INLINE_ROWS + 50)])
    threads: set[int] = set()
    decode = sqlite_events._row_to_event

    def spy(row):
        threads.add(threading.get_ident())
        return decode(row)

    monkeypatch.setattr(sqlite_events, "_row_to_event", spy)
    loop_thread = threading.get_ident()
    full = await log.read("long")
    tail = await log.read_tail("long", sqlite_events.DECODE_INLINE_ROWS + 10)
    assert [s.id for s in full] == list(range(1, sqlite_events.DECODE_INLINE_ROWS + 51))
    assert [s.id for s in tail] == [s.id for s in full[-(sqlite_events.DECODE_INLINE_ROWS + 10):]]
    assert threads and loop_thread not in threads
    threads.clear()
    short = await log.read("long", after=5, limit=3)      # a short page stays inline: no thread hop
    assert [s.id for s in short] == [6, 7, 8]
    assert threads == {loop_thread}
