"""progress.db: schema, ensure, seeding, claim order, stale reclaim, finishing (SPEC B 7, acceptance 14-18, 38, 40)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiary.core.errors import Conflict, InvalidRequest
from apiary.core.ids import SequentialIds
from apiary.storage.sqlite import progress_db as pdb

SQL_NOW = "SELECT datetime('now', ?)"


@pytest.fixture
def colony(tmp_path: Path) -> Path:
    path = tmp_path / "colonies" / "honey_comb"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def conn(colony: Path) -> Iterator[sqlite3.Connection]:
    connection = pdb.connect(pdb.ensure_progress_db(colony))
    yield connection
    connection.close()


def ago(conn: sqlite3.Connection, minutes: float) -> str:
    """SQLite datetime text ``minutes`` in the past."""
    return conn.execute(SQL_NOW, (f"-{minutes * 60} seconds",)).fetchone()[0]


def row(conn: sqlite3.Connection, task_id: str) -> dict[str, Any]:
    task = pdb.get_task(conn, task_id)
    assert task is not None
    return task


# -- acceptance 14: schema -----------------------------------------------------------------------


def test_ensure_twice_gives_schema_pragmas_tables_and_indexes(colony: Path) -> None:
    first = pdb.ensure_progress_db(colony)
    second = pdb.ensure_progress_db(colony)
    assert first == second == (colony / "data" / "progress.db").resolve()
    assert first.is_absolute()
    conn = pdb.connect(first)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT value FROM colony_meta WHERE key = 'schema_version'").fetchone()[0] == "1"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.isolation_level is None
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"tasks", "steps", "sop_checklist", "colony_meta"} <= names
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"idx_tasks_claimable", "idx_steps_task_seq", "idx_sop_required_open", "idx_tasks_status"} <= indexes
        claimable = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'idx_tasks_claimable'").fetchone()[0]
        assert "priority DESC, seq, created_at" in claimable
        assert "WHERE status = 'pending'" in claimable
    finally:
        conn.close()


def test_tasks_columns_and_defaults(conn: sqlite3.Connection) -> None:
    cols = {r[1]: (r[2], r[3], r[4], r[5]) for r in conn.execute("PRAGMA table_info(tasks)")}
    assert list(cols) == [
        "id", "seq", "priority", "goal", "payload", "status", "worker_id", "claim_token", "claimed_at",
        "started_at", "completed_at", "created_at", "updated_at", "retry_count", "max_retries", "last_error",
        "parent_task_id", "source",
    ]  # fmt: skip
    assert cols["id"][3] == 1
    assert cols["priority"][1:3] == (1, "0")
    assert cols["status"][1:3] == (1, "'pending'")
    assert cols["max_retries"][1:3] == (1, "3")
    fks = {(r[3], r[2], r[6]) for r in conn.execute("PRAGMA foreign_key_list(steps)")}
    assert fks == {("task_id", "tasks", "CASCADE")}


def test_deleting_a_task_deletes_its_steps_and_checklist(conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(
        conn,
        [{"goal": "g", "steps": [{"title": "a"}, {"title": "b"}], "sop_items": [{"key": "k", "description": "d"}]}],
        "test",
    )
    (child,) = pdb.seed_tasks(conn, [{"goal": "child", "parent_task_id": task_id}], "test")
    conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
    assert conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM sop_checklist").fetchone()[0] == 0
    assert row(conn, child)["parent_task_id"] is None  # ON DELETE SET NULL
    assert [e["kind"] for e in pdb.task_events(conn, task_id)] == ["created", "deleted"]


def test_ensure_migrates_an_older_file_without_touching_its_rows(colony: Path) -> None:
    db = colony / "data" / "progress.db"
    db.parent.mkdir()
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, goal TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',"
        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )
    old.execute("INSERT INTO tasks VALUES ('t1', 'old goal', 'pending', 'x', 'x')")
    old.commit()
    old.close()
    pdb.ensure_progress_db(colony)
    conn = pdb.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        claimed = pdb.claim(conn, "w1")
        assert claimed is not None
        assert (claimed.id, claimed.goal, claimed.retry_count, claimed.max_retries) == ("t1", "old goal", 0, 3)
    finally:
        conn.close()


# -- acceptance 15: patching the worker spec -----------------------------------------------------


def test_ensure_patches_worker_json_only(colony: Path) -> None:
    worker = {"name": "worker", "system_prompt": "p", "input_data": {"task_id": "t9"}, "tools": ["a"]}
    (colony / "worker.json").write_text(json.dumps(worker), encoding="utf-8")
    untouched = {"system_prompt": "x", "colony_name": "honey_comb"}
    for name in ("metadata.json", "triggers.json"):
        (colony / name).write_text(json.dumps(untouched), encoding="utf-8")
    (colony / "tools.json").write_text(json.dumps({"enabled_mcp_tools": None}), encoding="utf-8")
    (colony / "broken.json").write_text("{not json", encoding="utf-8")
    before = {p.name: p.read_bytes() for p in colony.glob("*.json") if p.name != "worker.json"}

    db = pdb.ensure_progress_db(colony)

    patched = json.loads((colony / "worker.json").read_text(encoding="utf-8"))
    assert patched["input_data"] == {
        "task_id": "t9",
        "db_path": str(db),
        "colony_id": "honey_comb",
        "colony_data_dir": str(db.parent),
    }
    assert Path(patched["input_data"]["db_path"]).is_absolute()
    assert {k: v for k, v in patched.items() if k != "input_data"} == {
        k: v for k, v in worker.items() if k != "input_data"
    }
    assert (colony / "worker.json").read_text(encoding="utf-8").startswith('{\n  "name"')  # indented 2
    assert {p.name: p.read_bytes() for p in colony.glob("*.json") if p.name != "worker.json"} == before


def test_ensure_leaves_an_up_to_date_file_unwritten(colony: Path) -> None:
    (colony / "worker.json").write_text(json.dumps({"system_prompt": "p"}), encoding="utf-8")
    pdb.ensure_progress_db(colony)
    stat = (colony / "worker.json").stat()
    pdb.ensure_progress_db(colony)
    again = (colony / "worker.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_ensure_fixes_a_stale_db_path_and_a_non_object_input_data(colony: Path) -> None:
    (colony / "worker.json").write_text(json.dumps({"system_prompt": "p", "input_data": "junk"}), encoding="utf-8")
    (colony / "other.json").write_text(
        json.dumps({"system_prompt": "p", "input_data": {"db_path": "/elsewhere/progress.db"}}), encoding="utf-8"
    )
    db = pdb.ensure_progress_db(colony)
    for name in ("worker.json", "other.json"):
        data = json.loads((colony / name).read_text(encoding="utf-8"))
        assert data["input_data"]["db_path"] == str(db)


# -- acceptance 17: claim order ------------------------------------------------------------------


def test_generic_claim_order_priority_then_seq_then_oldest(conn: sqlite3.Connection) -> None:
    pdb.seed_tasks(conn, [{"goal": "low", "id": "low", "priority": 0, "seq": 0}], "t")
    pdb.seed_tasks(conn, [{"goal": "hi-seq2", "id": "hi-seq2", "priority": 5, "seq": 2}], "t")
    pdb.seed_tasks(conn, [{"goal": "hi-seq1-new", "id": "hi-seq1-new", "priority": 5, "seq": 1}], "t")
    # Inserted last but created earlier: age, not insertion order, decides.
    pdb.seed_tasks(
        conn, [{"goal": "hi-seq1-old", "id": "hi-seq1-old", "priority": 5, "seq": 1}], "t", now=ago(conn, 60)
    )
    order = []
    while (claimed := pdb.claim(conn, "w")) is not None:
        order.append(claimed.id)
    assert order == ["hi-seq1-old", "hi-seq1-new", "hi-seq2", "low"]
    assert [i["id"] for i in pdb.snapshot_items(conn)] == order


def test_claim_sets_the_claim_fields(conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(conn, [{"goal": "g", "payload": {"a": 1}}], "t")
    claimed = pdb.claim(conn, "worker-1", ids=SequentialIds())
    assert claimed is not None
    assert (claimed.id, claimed.goal, claimed.worker_id) == (task_id, "g", "worker-1")
    assert claimed.payload == '{"a": 1}'
    assert claimed.payload_value() == {"a": 1}
    assert claimed.claim_token == "0000000000000001"
    stored = row(conn, task_id)
    assert stored["status"] == "claimed"
    assert stored["claim_token"] == claimed.claim_token
    # SQLite datetime('now') form, comparable as text with datetime('now', ...)
    assert stored["claimed_at"] == claimed.claimed_at
    assert len(claimed.claimed_at) == 19
    assert claimed.claimed_at[10] == " "
    assert conn.execute("SELECT ? <= datetime('now')", (claimed.claimed_at,)).fetchone()[0] == 1
    assert pdb.claim(conn, "worker-2") is None  # queue empty
    tokens = [pdb.claim(conn, "w", task_id=i) for i in pdb.seed_tasks(conn, [{"goal": "x"}] * 20, "t")]
    hexes = [t.claim_token for t in tokens if t is not None]
    assert len(set(hexes)) == 20
    assert all(len(h) == 16 and set(h) <= set("0123456789abcdef") for h in hexes)


def test_claim_by_id_only_takes_a_pending_row(conn: sqlite3.Connection) -> None:
    a, b = pdb.seed_tasks(conn, [{"goal": "a"}, {"goal": "b", "priority": -1}], "t")
    got = pdb.claim(conn, "w1", task_id=b)
    assert got is not None
    assert got.id == b
    assert pdb.claim(conn, "w2", task_id=b) is None
    assert pdb.claim(conn, "w2", task_id="missing") is None
    assert row(conn, b)["worker_id"] == "w1"
    nxt = pdb.claim(conn, "w2")
    assert nxt is not None
    assert nxt.id == a


# -- acceptance 18: stale reclaim ----------------------------------------------------------------


def test_stale_reclaim_returns_fails_and_keeps(conn: sqlite3.Connection) -> None:
    fresh, old, exhausted = pdb.seed_tasks(
        conn, [{"goal": "fresh"}, {"goal": "old"}, {"goal": "exhausted", "max_retries": 2}], "t"
    )
    pdb.claim(conn, "w1", task_id=fresh, now=ago(conn, 5))
    pdb.claim(conn, "w2", task_id=old, now=ago(conn, 16))
    pdb.claim(conn, "w3", task_id=exhausted)
    pdb.start(conn, exhausted, "w3")
    # Backdate by SQL as well: the production path compares with datetime('now').
    conn.execute(
        "UPDATE tasks SET claimed_at = datetime('now', '-16 minutes'), retry_count = 2 WHERE id = ?", (exhausted,)
    )

    assert pdb.reclaim_stale(conn, stale_claim_s=900) == 1

    r = row(conn, old)
    assert (r["status"], r["retry_count"], r["worker_id"], r["claim_token"], r["claimed_at"], r["started_at"]) == (
        "pending", 1, None, None, None, None
    )  # fmt: skip
    r = row(conn, exhausted)
    assert (r["status"], r["last_error"]) == ("failed", "exceeded max_retries after stale claim")
    assert r["completed_at"] is not None
    r = row(conn, fresh)
    assert (r["status"], r["worker_id"], r["retry_count"]) == ("claimed", "w1", 0)
    kinds = {i: [e["kind"] for e in pdb.task_events(conn, i)] for i in (fresh, old, exhausted)}
    assert kinds == {
        fresh: ["created", "claimed"],
        old: ["created", "claimed", "reclaimed"],
        exhausted: ["created", "claimed", "started", "failed"],
    }
    assert pdb.reclaim_stale(conn, stale_claim_s=900) == 0


def test_heartbeat_keeps_a_claim_fresh(conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(conn, [{"goal": "g"}], "t")
    pdb.claim(conn, "w1", now=ago(conn, 20))
    assert not pdb.heartbeat(conn, task_id, "intruder")
    assert pdb.heartbeat(conn, task_id, "w1")
    assert pdb.reclaim_stale(conn, stale_claim_s=900) == 0
    # Simulated future: 16 minutes from now the heartbeat is stale too.
    later = conn.execute(SQL_NOW, ("+960 seconds",)).fetchone()[0]
    assert pdb.reclaim_stale(conn, stale_claim_s=900, now=later) == 1


def test_ensure_reclaims_stale_claims(colony: Path, conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(conn, [{"goal": "g"}], "t")
    pdb.claim(conn, "w1", now=ago(conn, 16))
    pdb.ensure_progress_db(colony)
    assert row(conn, task_id)["status"] == "pending"
    pdb.claim(conn, "w1", now=ago(conn, 3))
    pdb.ensure_progress_db(colony, stale_claim_s=60)
    assert row(conn, task_id)["retry_count"] == 2


# -- finishing -----------------------------------------------------------------------------------


def test_complete_and_fail_are_guarded_by_worker(conn: sqlite3.Connection) -> None:
    a, b = pdb.seed_tasks(conn, [{"goal": "a"}, {"goal": "demo:fail boom"}], "t")
    pdb.claim(conn, "w1", task_id=a)
    pdb.claim(conn, "w2", task_id=b)
    assert not pdb.complete(conn, a, "w2")
    assert not pdb.fail(conn, a, "w2", "nope")
    assert pdb.start(conn, a, "w1")
    assert pdb.complete(conn, a, "w1")
    assert not pdb.complete(conn, a, "w1")  # already done
    assert pdb.fail(conn, b, "w2", "RuntimeError: boom")
    ra, rb = row(conn, a), row(conn, b)
    assert (ra["status"], ra["last_error"]) == ("done", None)
    assert ra["completed_at"] is not None
    assert ra["started_at"] is not None
    assert rb["status"] == "failed"
    assert "boom" in rb["last_error"]
    assert pdb.claim(conn, "w3") is None  # finished rows are never claimable


def test_required_checklist_blocks_done(conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(
        conn,
        [
            {
                "goal": "g",
                "sop_items": [
                    {"key": "tests", "description": "t"},
                    {"key": "nice", "description": "n", "required": False},
                ],
            }
        ],
        "t",
    )
    pdb.claim(conn, "w1")
    with pytest.raises(Conflict, match="required checklist items are open: tests") as err:
        pdb.complete(conn, task_id, "w1")
    assert err.value.extra["open_items"] == ["tests"]
    assert row(conn, task_id)["status"] == "claimed"
    assert not pdb.mark_sop_done(conn, task_id, "tests", "intruder")
    assert not pdb.mark_sop_done(conn, task_id, "missing", "w1")
    assert pdb.mark_sop_done(conn, task_id, "tests", "w1", note="all green")
    assert not pdb.complete(conn, task_id, "intruder")  # not the holder: False, not Conflict
    assert pdb.complete(conn, task_id, "w1")
    tests = next(i for i in row(conn, task_id)["sop_items"] if i["key"] == "tests")
    assert (tests["done_by"], tests["note"]) == ("w1", "all green")


def test_release_returns_to_pending_without_retry(conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(conn, [{"goal": "g"}], "t")
    pdb.claim(conn, "w1")
    pdb.start(conn, task_id, "w1")
    assert not pdb.release(conn, task_id, "w2")
    assert pdb.release(conn, task_id, "w1")
    r = row(conn, task_id)
    assert (r["status"], r["worker_id"], r["retry_count"], r["started_at"]) == ("pending", None, 0, None)
    assert [e["kind"] for e in pdb.task_events(conn, task_id)] == ["created", "claimed", "started", "released"]


def test_steps(conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(conn, [{"goal": "g", "steps": ["a", "b"]}], "t")
    with pytest.raises(InvalidRequest):
        pdb.set_step_status(conn, task_id, 1, "finished")
    assert not pdb.set_step_status(conn, task_id, 1, "done", worker_id="w1")  # not held
    pdb.claim(conn, "w1")
    assert pdb.set_step_status(conn, task_id, 1, "in_progress", worker_id="w1")
    assert pdb.set_step_status(conn, task_id, 1, "done", worker_id="w1", evidence="out.md")
    assert not pdb.set_step_status(conn, task_id, 9, "done")
    step = row(conn, task_id)["steps"][0]
    assert (step["status"], step["evidence"], step["worker_id"]) == ("done", "out.md", "w1")
    assert step["started_at"] is not None
    assert step["completed_at"] is not None
    events = [e for e in pdb.task_events(conn, task_id) if e["kind"] == "step"]
    assert [json.loads(e["detail"])["to"] for e in events] == ["in_progress", "done"]
    assert [s["status"] for s in pdb.snapshot_items(conn)[0]["steps"]] == ["done", "pending"]


# -- acceptance 38 (counts) and the snapshot shape ------------------------------------------------


def test_counts_and_snapshot(conn: sqlite3.Connection) -> None:
    ids = pdb.seed_tasks(conn, [{"goal": f"g{i}", "steps": ["s"]} for i in range(4)], "t")
    for task_id in ids[:2]:
        pdb.claim(conn, "w", task_id=task_id)
        pdb.complete(conn, task_id, "w")
    pdb.claim(conn, "w", task_id=ids[2])
    pdb.start(conn, ids[2], "w")
    assert pdb.task_counts(conn) == {
        "total": 4, "pending": 1, "claimed": 0, "in_progress": 1, "done": 2, "failed": 0
    }  # fmt: skip
    items = pdb.snapshot_items(conn)
    assert [i["id"] for i in items] == ids
    assert set(items[0]) == {
        "id", "goal", "status", "priority", "worker_id", "retry_count", "last_error",
        "created_at", "updated_at", "completed_at", "steps",
    }  # fmt: skip
    assert items[0]["steps"] == [{"seq": 1, "title": "s", "status": "pending"}]
    assert len(pdb.snapshot_items(conn, limit=2)) == 2
    both = pdb.progress_snapshot(conn, limit=1)
    assert both["tasks"]["total"] == 4
    assert len(both["items"]) == 1
    assert pdb.get_task(conn, "missing") is None
