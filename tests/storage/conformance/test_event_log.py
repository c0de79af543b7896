"""EventLog conformance: gap-free ids, exact suffix reads, tails, copies, deletes, reopen."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from apiary.core.events import Event
from apiary.storage.base import Stores
from apiary.storage.sqlite.stores import SqliteStores


def ev(n: int, type_: str = "custom") -> Event:
    return Event(type=type_, data={"n": n}, stream_id="queen", node_id="queen", execution_id="s1",
                 timestamp="2026-05-01T09:30:12+00:00")


async def test_first_ids_are_1_2_3(stores: Stores):
    ids = [(await stores.events.append("s1", ev(i))).id for i in range(3)]
    assert ids == [1, 2, 3]
    assert await stores.events.last_id("s1") == 3


async def test_ids_are_per_session(stores: Stores):
    await stores.events.append("a", ev(0))
    await stores.events.append("a", ev(1))
    first_b = await stores.events.append("b", ev(2))
    assert first_b.id == 1
    assert await stores.events.last_id("a") == 2
    assert await stores.events.last_id("never") == 0


async def test_concurrent_appends_from_many_tasks_are_gap_free(stores: Stores):
    async def writer(w: int) -> list[int]:
        ids = []
        for i in range(20):
            stored = await stores.events.append("s1", ev(w * 100 + i))
            ids.append(stored.id)
            await asyncio.sleep(0)
        return ids

    per_task = await asyncio.gather(*(writer(w) for w in range(25)))
    all_ids = sorted(i for ids in per_task for i in ids)
    assert all_ids == list(range(1, 501))
    for ids in per_task:   # each task sees its own appends in increasing order
        assert ids == sorted(ids)
    stored = await stores.events.read("s1")
    assert [s.id for s in stored] == list(range(1, 501))
    # the payload written under each id is the one that got that id
    assert sorted(s.event.data["n"] for s in stored) == sorted(w * 100 + i for w in range(25) for i in range(20))


async def test_concurrent_append_many_and_append_interleave_without_gaps(stores: Stores):
    async def batch(w: int) -> list[int]:
        return [s.id for s in await stores.events.append_many("s1", [ev(w * 10 + i) for i in range(5)])]

    async def single(w: int) -> list[int]:
        return [(await stores.events.append("s1", ev(1000 + w))).id]

    results = await asyncio.gather(*(batch(w) if w % 2 else single(w) for w in range(20)))
    for ids in results:   # a batch gets consecutive ids
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert sorted(i for ids in results for i in ids) == list(range(1, 10 * 5 + 10 + 1))


async def test_read_after_is_exactly_the_suffix(stores: Stores):
    await stores.events.append_many("s1", [ev(i) for i in range(10)])
    for after in range(0, 12):
        got = await stores.events.read("s1", after=after)
        assert [s.id for s in got] == list(range(after + 1, 11))
    assert [s.id for s in await stores.events.read("s1", after=3, limit=4)] == [4, 5, 6, 7]
    assert await stores.events.read("s1", after=3, limit=0) == []
    assert await stores.events.read("unknown") == []


async def test_read_round_trips_the_event(stores: Stores):
    original = Event(type="tool_call_started", data={"tool_input": {"path": "é.md"}}, stream_id="default",
                     node_id="worker", execution_id="s1", timestamp="2026-05-01T09:31:05.120931+00:00",
                     correlation_id="c", colony_id="demo", run_id="r1")
    stored = await stores.events.append("s1", original)
    [back] = await stores.events.read("s1")
    assert back.event == original
    assert back.id == stored.id == 1
    assert json.loads(back.json_text) == original.to_wire(1)
    assert json.loads(back.json_text)["id"] == 1


async def test_read_tail(stores: Stores):
    await stores.events.append_many("s1", [ev(i) for i in range(10)])
    assert [s.id for s in await stores.events.read_tail("s1", 3)] == [8, 9, 10]
    assert [s.id for s in await stores.events.read_tail("s1", 100)] == list(range(1, 11))
    assert await stores.events.read_tail("s1", 0) == []
    assert await stores.events.read_tail("nobody", 5) == []


async def test_append_many_returns_consecutive_ids(stores: Stores):
    await stores.events.append("s1", ev(0))
    stored = await stores.events.append_many("s1", [ev(i) for i in range(1, 5)])
    assert [s.id for s in stored] == [2, 3, 4, 5]
    assert [s.event.data["n"] for s in stored] == [1, 2, 3, 4]
    assert await stores.events.append_many("s1", []) == []
    assert (await stores.events.append("s1", ev(9))).id == 6


async def test_copy_session_keeps_ids_and_continues(stores: Stores):
    await stores.events.append_many("src", [ev(i) for i in range(4)])
    await stores.events.append("dst", ev(99))    # replaced by the copy
    await stores.events.copy_session("src", "dst")
    copied = await stores.events.read("dst")
    assert [(s.id, s.event.data["n"]) for s in copied] == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert await stores.events.last_id("dst") == 4
    assert (await stores.events.append("dst", ev(5))).id == 5
    assert await stores.events.last_id("src") == 4   # the source is untouched
    assert (await stores.events.append("src", ev(6))).id == 5


async def test_delete_session_restarts_ids(stores: Stores):
    await stores.events.append_many("s1", [ev(i) for i in range(3)])
    await stores.events.append("other", ev(0))
    await stores.events.delete_session("s1")
    assert await stores.events.read("s1") == []
    assert await stores.events.last_id("s1") == 0
    assert (await stores.events.append("s1", ev(7))).id == 1
    assert [s.id for s in await stores.events.read("other")] == [1]


async def test_sqlite_ids_survive_reopen(tmp_path: Path):
    path = tmp_path / "apiary.db"
    first = await SqliteStores.open(path)
    await first.events.append_many("s1", [ev(i) for i in range(5)])
    await first.aclose()
    second = await SqliteStores.open(path)
    try:
        assert await second.events.last_id("s1") == 5
        assert (await second.events.append("s1", ev(5))).id == 6
        assert [s.event.data["n"] for s in await second.events.read("s1", after=4)] == [4, 5]
    finally:
        await second.aclose()


async def test_ping(stores: Stores):
    await stores.ping()


def delta(type_: str, iteration: object, **extra: object) -> Event:
    data = {"content": "x"} if iteration is _MISSING else {"content": "x", "iteration": iteration}
    return Event(type=type_, data=data, stream_id=extra.get("stream_id", "queen"),  # type: ignore[arg-type]
                 node_id=extra.get("node_id", "queen"), execution_id=extra.get("execution_id", "s1"),  # type: ignore[arg-type]
                 timestamp="2026-05-01T09:30:12+00:00")


_MISSING = object()


async def test_count_collapsed_is_the_length_of_the_collapsed_log(stores: Stores):
    from apiary.core.events import collapse_text_deltas

    log = stores.events
    events = [ev(0), delta("llm_text_delta", 1), delta("llm_text_delta", 1), delta("llm_text_delta", 2),
              delta("client_output_delta", 1), delta("client_output_delta", None),
              delta("client_output_delta", _MISSING),            # missing and null are one key
              delta("llm_text_delta", 1, execution_id="s2"), delta("llm_text_delta", 1, node_id=None),
              ev(1, "llm_turn_complete"), delta("llm_text_delta", 1), ev(2)]
    await log.append_many("s1", events)
    stored = await log.read("s1")
    assert await log.count_collapsed("s1") == len(collapse_text_deltas(stored)) == 9   # 3 others + 6 keys
    for upto in range(len(stored) + 1):
        assert await log.count_collapsed("s1", upto=upto) == len(collapse_text_deltas(stored[:upto])), upto
    assert await log.count_collapsed("nobody") == 0


async def test_submitted_appends_get_ids_in_submission_order(stores: Stores):
    futures = [stores.events.submit("s1", [ev(i), ev(i + 100)]) for i in range(10)]
    results = await asyncio.gather(*futures)
    assert [s.id for batch in results for s in batch] == list(range(1, 21))
    assert [s.event.data["n"] for s in await stores.events.read("s1")] == [n for i in range(10) for n in (i, i + 100)]
