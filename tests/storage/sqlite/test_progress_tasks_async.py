"""SqliteTaskQueue: the asyncio face of progress.db."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from apiary.core.errors import Conflict, InvalidRequest, StorageError
from apiary.storage.sqlite import progress_db as pdb
from apiary.storage.sqlite.tasks import SqliteTaskQueue


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqliteTaskQueue]:
    colony = tmp_path / "colonies" / "hive"
    colony.mkdir(parents=True)
    q = SqliteTaskQueue(pdb.ensure_progress_db(colony))
    yield q
    await q.close()


async def test_lifecycle(queue: SqliteTaskQueue) -> None:
    a, b = await queue.enqueue([{"goal": "a", "sop_items": [{"key": "k", "description": "d"}]}, {"goal": "b"}])
    claimed = await queue.claim("w1", task_id=b)
    assert claimed is not None
    assert claimed.id == b
    assert await queue.start(b, "w1")
    assert await queue.heartbeat(b, "w1")
    assert not await queue.heartbeat(b, "w2")
    assert await queue.fail(b, "w1", "boom")
    got = await queue.claim("w1")
    assert got is not None
    assert got.id == a
    with pytest.raises(Conflict):
        await queue.complete(a, "w1")
    assert await queue.mark_sop_done(a, "k", "w1")
    assert await queue.complete(a, "w1")
    assert await queue.counts() == {
        "total": 2, "pending": 0, "claimed": 0, "in_progress": 0, "done": 1, "failed": 1
    }  # fmt: skip
    task = await queue.get(b)
    assert task is not None
    assert (task["status"], task["last_error"], task["source"]) == ("failed", "boom", "enqueue_tool")
    assert [i["id"] for i in await queue.snapshot(limit=10)] == [a, b]
    assert (await queue.progress())["tasks"]["total"] == 2
    assert [e["kind"] for e in await queue.events(a)] == ["created", "claimed", "sop", "done"]
    assert await queue.reclaim_stale(900) == 0


async def test_release_and_steps(queue: SqliteTaskQueue) -> None:
    (task_id,) = await queue.enqueue([{"goal": "g", "steps": ["one"]}], "queen_create")
    await queue.claim("w1")
    assert await queue.set_step_status(task_id, 1, "done", worker_id="w1", evidence="e")
    assert await queue.release(task_id, "w1")
    task = await queue.get(task_id)
    assert task is not None
    assert (task["status"], task["retry_count"], task["steps"][0]["status"]) == ("pending", 0, "done")


async def test_errors_reach_the_caller(queue: SqliteTaskQueue) -> None:
    with pytest.raises(InvalidRequest, match=r"task\[0\] missing required 'goal' field"):
        await queue.enqueue([{"title": "no goal"}])
    assert (await queue.counts())["total"] == 0


async def test_concurrent_claims_never_double_claim(queue: SqliteTaskQueue) -> None:
    ids = await queue.enqueue([{"goal": f"t{i}"} for i in range(600)], "test")
    seen: list[tuple[str, str]] = []

    async def worker(n: int) -> None:
        name = f"w{n}"
        while (task := await queue.claim(name)) is not None:
            seen.append((task.id, name))
            assert await queue.complete(task.id, name)

    await asyncio.gather(*(worker(n) for n in range(40)))
    assert Counter(task_id for task_id, _ in seen) == Counter(ids)
    assert (await queue.counts())["done"] == 600
    assert len({name for _, name in seen}) > 1


async def test_the_loop_is_never_blocked(queue: SqliteTaskQueue) -> None:
    (task_id,) = await queue.enqueue([{"goal": "g"}], "test")
    queue._lock.acquire()  # the database thread now waits: the loop must not
    try:
        pending = asyncio.ensure_future(queue.claim("w1"))
        started = time.monotonic()
        await asyncio.sleep(0.05)
        assert time.monotonic() - started < 0.5
        assert not pending.done()
    finally:
        queue._lock.release()
    claimed = await pending
    assert claimed is not None
    assert claimed.id == task_id


async def test_a_cancelled_claim_gives_its_row_back(queue: SqliteTaskQueue) -> None:
    (task_id,) = await queue.enqueue([{"goal": "g"}], "test")
    queue._lock.acquire()
    try:
        claiming = asyncio.ensure_future(queue.claim("w1"))
        await asyncio.sleep(0.01)
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
    finally:
        queue._lock.release()  # the claim now commits in the thread, then is released
    for _ in range(200):
        task = await queue.get(task_id)
        assert task is not None
        if task["status"] == "pending" and task["worker_id"] is None:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail(f"claim was not given back: {task}")
    assert [e["kind"] for e in await queue.events(task_id)] == ["created", "claimed", "released"]


async def test_closed_queue_refuses_calls(tmp_path: Path) -> None:
    q = SqliteTaskQueue(tmp_path / "c" / "data" / "progress.db")  # created on first use
    assert (await q.counts())["total"] == 0
    await q.close()
    await q.close()
    with pytest.raises(StorageError, match="closed"):
        await q.counts()


async def test_close_waits_for_queued_calls(tmp_path: Path) -> None:
    async with SqliteTaskQueue(tmp_path / "progress.db") as q:
        pending = [asyncio.ensure_future(q.enqueue([{"goal": str(i)}], "t")) for i in range(20)]
        await asyncio.sleep(0)
    assert [len(ids) for ids in await asyncio.gather(*pending)] == [1] * 20
    conn = pdb.connect(tmp_path / "progress.db")
    assert pdb.task_counts(conn)["total"] == 20
    conn.close()
