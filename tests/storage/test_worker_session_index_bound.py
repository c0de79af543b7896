"""A worker session's checkpoint index is bounded (docs/reliability.md, section 5).

Found by the soak: a colony session's trigger reuses one worker session for every execution, so its
checkpoints never stop coming, and each execution loaded, kept in memory and rewrote an index entry for
every checkpoint ever written (287 KB of ``index.json`` after two minutes, growing). The index now lists
the newest ``INDEX_KEEP``; every checkpoint file stays and is listed.
"""

from __future__ import annotations

import json
from pathlib import Path

from apiary.storage import worker_session_files
from apiary.storage.worker_session_files import WorkerSessionFiles


def checkpoint(n: int) -> dict:
    return {"checkpoint_id": f"cp_iteration_worker_20260101_000000_{n}", "checkpoint_type": "iteration",
            "created_at": "2026-01-01T00:00:00Z", "current_node": "worker", "is_clean": True, "n": n}


def test_the_index_keeps_the_newest_checkpoints_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(worker_session_files, "INDEX_KEEP", 25)
    first = WorkerSessionFiles(tmp_path / "w")
    for n in range(1, 41):
        first.write_checkpoint(checkpoint(n))
    first.write_index()
    assert len(first._entries()) == 25
    index = json.loads((tmp_path / "w" / "checkpoints" / "index.json").read_text())
    assert [c["checkpoint_id"].rsplit("_", 1)[1] for c in index["checkpoints"]] == [str(n) for n in range(16, 41)]
    assert index["latest_checkpoint_id"] == checkpoint(40)["checkpoint_id"]
    # the next execution's store loads the bounded index, and goes on bounded
    second = WorkerSessionFiles(tmp_path / "w")
    for n in range(41, 51):
        second.write_checkpoint(checkpoint(n))
    assert sorted(int(i.rsplit("_", 1)[1]) for i in second._entries()) == list(range(26, 51))
    # every file is still there and listed
    assert [c["n"] for c in second.list_checkpoints()] == list(range(1, 51))


def test_an_unbounded_index_on_disk_is_cut_when_loaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(worker_session_files, "INDEX_KEEP", 10)
    folder = tmp_path / "w" / "checkpoints"
    folder.mkdir(parents=True)
    listed = [{"checkpoint_id": checkpoint(n)["checkpoint_id"]} for n in range(100, 0, -1)]   # any order
    (folder / "index.json").write_text(json.dumps({"session_id": "w", "checkpoints": listed}))
    files = WorkerSessionFiles(tmp_path / "w")
    assert sorted(int(i.rsplit("_", 1)[1]) for i in files._entries()) == list(range(91, 101))
