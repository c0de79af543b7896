"""FileWorkerSession writes each checkpoint behind the loop: in order, visible to every later call, and
a failed write is raised by the next call rather than lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from apiary.storage.worker_session_files import FileWorkerSession


def checkpoint(n: int) -> dict:
    return {"checkpoint_id": f"cp_iteration_worker_20260101_000000_{n}", "checkpoint_type": "iteration",
            "created_at": "2026-01-01T00:00:00Z", "n": n}


async def test_saves_land_in_order_and_reads_see_them(tmp_path: Path):
    store = FileWorkerSession(tmp_path / "w1")
    for n in range(1, 21):   # state.json goes with the index: every INDEX_EVERY (10) saves
        await store.save(checkpoint(n), {"status": "running", "n": n})
    assert store._pending is not None            # the last save may still be in flight here...
    state = await store.read_state()             # ... and a read waits for it
    assert state == {"status": "running", "n": 20}
    listed = await store.list_checkpoints()
    assert [c["n"] for c in listed] == list(range(1, 21))
    assert (await store.latest_checkpoint())["n"] == 20


async def test_a_failed_write_is_raised_by_the_next_call(tmp_path: Path):
    blocker = tmp_path / "w2"
    blocker.write_text("a file where the folder should be")
    store = FileWorkerSession(blocker)
    await store.save(checkpoint(1), {"status": "running"})   # returns: the write runs behind
    with pytest.raises(OSError):
        await store.read_state()
    assert await store.list_checkpoints() == []              # raised once, then the store goes on


async def test_a_cancelled_caller_does_not_let_the_next_write_overtake(tmp_path: Path):
    store = FileWorkerSession(tmp_path / "w3")
    await store.save(checkpoint(1), {"n": 1}, force_index=True)
    waiter = asyncio.ensure_future(store.read_state())
    await asyncio.sleep(0)
    waiter.cancel()
    await store.save(checkpoint(2), {"n": 2}, force_index=True)
    assert (await store.read_state()) == {"n": 2}


async def test_state_json_is_written_with_the_index_so_they_always_agree(tmp_path: Path):
    import json

    from apiary.storage.worker_session_files import INDEX_EVERY

    store = FileWorkerSession(tmp_path / "w4")
    folder = tmp_path / "w4"

    def on_disk() -> tuple[str | None, str | None]:
        state = json.loads((folder / "state.json").read_text()) if (folder / "state.json").exists() else {}
        index = folder / "checkpoints" / "index.json"
        listed = json.loads(index.read_text()) if index.exists() else {}
        return state.get("latest_checkpoint_id"), listed.get("latest_checkpoint_id")

    await store.save(checkpoint(1), {"latest_checkpoint_id": checkpoint(1)["checkpoint_id"]}, force_index=True)
    for n in range(2, 2 * INDEX_EVERY + 3):
        await store.save(checkpoint(n), {"latest_checkpoint_id": checkpoint(n)["checkpoint_id"]})
        await store._settle()
        state_latest, index_latest = on_disk()
        assert state_latest == index_latest is not None
    assert len(await store.list_checkpoints()) == 2 * INDEX_EVERY + 2   # every checkpoint has its file
