"""The SQLite event log keeps bounded state and does not parse long reads on the event loop.

Found by the soak: ``SqliteEventLog._last`` (the per-session id counters) kept one entry for every
session that ever wrote an event, and a history read of a long log (``GET .../events/history`` reads the
whole log) decoded every row's JSON on the loop thread, 100-300 ms per request late in the soak.
"""

from __future__ import annotations

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


async def test_the_id_counters_are_bounded_and_ids_stay_gap_free(log, monkeypatch):
    monkeypatch.setattr(sqlite_events, "LAST_CACHE", 8)
    for i in range(30):
        await log.append(f"s{i}", ev(0))
    assert len(log._last) <= 8
    # a session whose counter was dropped continues from the log, not from 1
    for i in range(30):
        stored = await log.append_many(f"s{i}", [ev(1), ev(2)])
        assert [s.id for s in stored] == [2, 3]
        assert await log.last_id(f"s{i}") == 3
    assert len(log._last) <= 8
    assert [s.id for s in await log.read("s0")] == [1, 2, 3]


async def test_deleting_a_session_drops_its_counter(log):
    await log.append("gone", ev(0))
    assert "gone" in log._last
    await log.delete_session("gone")
    assert "gone" not in log._last
    assert (await log.append("gone", ev(1))).id == 1


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
