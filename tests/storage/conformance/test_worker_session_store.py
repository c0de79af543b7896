"""WorkerSessionStore: the same behaviour from the folder (SQLite, memory) and the tables (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from apiary.storage.base import Stores


def _checkpoint(cp_id: str, n: int) -> dict:
    return {"checkpoint_id": cp_id, "checkpoint_type": "node_start", "created_at": f"2026-12-02T00:00:0{n}",
            "current_node": "worker", "is_clean": True, "description": f"step {n}", "loop": {"next_seq": n}}


async def test_state_checkpoints_and_listing(stores: Stores, tmp_path: Path):
    root = tmp_path / "agents" / "c1" / "sessions"
    store = stores.worker_session("c1", root / "ws1", "ws1")
    assert not await store.exists()
    assert await store.read_state() is None
    assert await store.latest_checkpoint() is None
    ids = [await store.new_checkpoint_id("node_start", "worker", 1_800_000_000.0 + i) for i in range(3)]
    assert len(set(ids)) == 3 and [int(i.rsplit("_", 1)[1]) for i in ids] == [1, 2, 3]
    for n, cp_id in enumerate(ids):   # the last is a forced one (node_start, complete, interrupted): state + index
        await store.save(_checkpoint(cp_id, n), {"status": "active", "latest_checkpoint_id": cp_id},
                         force_index=n == len(ids) - 1)
    assert await store.exists()
    assert [c["checkpoint_id"] for c in await store.list_checkpoints()] == ids
    assert (await store.latest_checkpoint())["checkpoint_id"] == ids[-1]
    assert (await store.get_checkpoint(ids[1]))["loop"] == {"next_seq": 1}
    assert await store.get_checkpoint("cp_missing_1") is None
    assert (await store.read_state())["latest_checkpoint_id"] == ids[-1]
    await store.end({"status": "completed"}, "run1", "run_completed", 1_800_000_100.0)
    assert (await store.read_state())["status"] == "completed"
    # A second handle (another process, or a restart) sees the same and numbers on from there.
    again = stores.worker_session("c1", root / "ws1", "ws1")
    assert [c["checkpoint_id"] for c in await again.list_checkpoints()] == ids
    assert (await again.new_checkpoint_id("node_complete", "worker", 1_800_000_200.0)).endswith("_4")
    # Sessions are listed per colony, and colonies do not see each other's.
    other = stores.worker_session("c2", tmp_path / "agents" / "c2" / "sessions" / "ws9", "ws9")
    await other.write_state({"status": "active"})
    assert await stores.worker_session_ids("c1", root) == ["ws1"]
    assert await stores.worker_session_ids("c2", tmp_path / "agents" / "c2" / "sessions") == ["ws9"]
