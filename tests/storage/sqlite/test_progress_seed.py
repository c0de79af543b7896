"""progress.db seeding: defaults, steps, checklist items, validation texts, all or nothing (SPEC B 7 "Seed")."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiary.core.errors import Conflict, InvalidRequest
from apiary.storage.sqlite import progress_db as pdb


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    colony = tmp_path / "colonies" / "seeds"
    colony.mkdir(parents=True)
    connection = pdb.connect(pdb.ensure_progress_db(colony))
    yield connection
    connection.close()


def row(conn: sqlite3.Connection, task_id: str) -> dict[str, Any]:
    task = pdb.get_task(conn, task_id)
    assert task is not None
    return task


# -- seeding -------------------------------------------------------------------------------------


def test_seed_returns_ids_in_input_order_with_defaults(conn: sqlite3.Connection) -> None:
    ids = pdb.seed_tasks(
        conn,
        [
            {"goal": "a", "id": "first"},
            {"goal": "b", "payload": {"k": [1, "é"]}, "priority": 2, "seq": 7, "max_retries": 1},
            {"goal": "c", "payload": "plain text", "steps": ["one", {"title": "two", "detail": "d", "seq": 5}]},
        ],
        "queen_create",
    )
    assert ids[0] == "first"
    assert len(set(ids)) == 3
    a, b, c = (row(conn, i) for i in ids)
    assert (a["status"], a["source"], a["priority"], a["max_retries"], a["retry_count"]) == (
        "pending", "queen_create", 0, 3, 0
    )  # fmt: skip
    assert a["created_at"] == a["updated_at"]
    assert a["created_at"].endswith("+00:00")
    assert len(a["created_at"]) == len("2026-05-01T09:30:12+00:00")
    assert b["payload"] == '{"k": [1, "é"]}'
    assert (b["priority"], b["seq"], b["max_retries"]) == (2, 7, 1)
    assert c["payload"] == "plain text"
    assert [(s["seq"], s["title"], s["detail"], s["status"]) for s in c["steps"]] == [
        (1, "one", None, "pending"),
        (5, "two", "d", "pending"),
    ]


def test_seed_sop_items(conn: sqlite3.Connection) -> None:
    (task_id,) = pdb.seed_tasks(
        conn,
        [
            {
                "goal": "g",
                "sop_items": [
                    {"key": "tests", "description": "run tests"},
                    {"key": "docs", "description": "write docs", "required": False, "note": "n"},
                ],
            }
        ],
        "test",
    )
    items = row(conn, task_id)["sop_items"]
    assert [(i["key"], i["required"], i["note"], i["done_at"]) for i in items] == [
        ("tests", 1, None, None),
        ("docs", 0, "n", None),
    ]


def test_empty_seed_does_nothing(conn: sqlite3.Connection) -> None:
    assert pdb.seed_tasks(conn, [], "x") == []
    assert pdb.task_counts(conn)["total"] == 0


def test_enqueue_task_uses_source_enqueue_tool(conn: sqlite3.Connection) -> None:
    task_id = pdb.enqueue_task(conn, {"goal": "later"})
    assert row(conn, task_id)["source"] == "enqueue_tool"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"id": "x"}, "task[1] missing required 'goal' field"),
        ({"goal": None}, "task[1] missing required 'goal' field"),
        ({"goal": "  "}, "task[1] missing required 'goal' field"),
        ({"goal": 3}, "task[1].goal must be a string"),
        ({"goal": "g", "priority": "high"}, "task[1].priority must be an integer"),
        ({"goal": "g", "priority": True}, "task[1].priority must be an integer"),
        ({"goal": "g", "seq": 1.5}, "task[1].seq must be an integer"),
        ({"goal": "g", "max_retries": "3"}, "task[1].max_retries must be an integer"),
        ({"goal": "g", "id": 12}, "task[1].id must be a string"),
        ({"goal": "g", "parent_task_id": 1}, "task[1].parent_task_id must be a string"),
        ({"goal": "g", "steps": "do it"}, "task[1].steps must be a list"),
        ({"goal": "g", "sop_items": {}}, "task[1].sop_items must be a list"),
        ({"goal": "g", "steps": [7]}, "task[1].steps[0] must be an object"),
        ({"goal": "g", "steps": [{"detail": "d"}]}, "task[1].steps[0] missing required 'title' field"),
        ({"goal": "g", "steps": [{"title": "a", "seq": "1"}]}, "task[1].steps[0].seq must be an integer"),
        ({"goal": "g", "sop_items": [{"key": "k"}]}, "task[1].sop_items[0] missing required 'description' field"),
        ({"goal": "g", "sop_items": ["k"]}, "task[1].sop_items[0] must be an object"),
        ("just a goal", "task[1] must be an object"),
    ],
)
def test_seed_validation_is_all_or_nothing(conn: sqlite3.Connection, task: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        pdb.seed_tasks(conn, [{"goal": "fine"}, task], "test")
    assert err.value.message == message
    assert pdb.task_counts(conn)["total"] == 0


def test_seed_rejects_a_non_list(conn: sqlite3.Connection) -> None:
    with pytest.raises(InvalidRequest, match="tasks must be a list"):
        pdb.seed_tasks(conn, {"goal": "g"}, "test")  # type: ignore[arg-type]


def test_seed_conflicts_roll_back_the_whole_batch(conn: sqlite3.Connection) -> None:
    pdb.seed_tasks(conn, [{"goal": "a", "id": "taken"}], "test")
    with pytest.raises(Conflict, match=r"task\[1\]\.id 'taken' already exists"):
        pdb.seed_tasks(conn, [{"goal": "b"}, {"goal": "c", "id": "taken"}], "test")
    with pytest.raises(InvalidRequest, match=r"task\[1\]\.id 'dup' is used twice"):
        pdb.seed_tasks(conn, [{"goal": "b", "id": "dup"}, {"goal": "c", "id": "dup"}], "test")
    with pytest.raises(InvalidRequest, match="parent_task_id 'nobody' does not exist"):
        pdb.seed_tasks(conn, [{"goal": "b"}, {"goal": "c", "parent_task_id": "nobody"}], "test")
    with pytest.raises(InvalidRequest, match="seq 1 is used twice"):
        pdb.seed_tasks(conn, [{"goal": "b", "steps": [{"title": "x"}, {"title": "y", "seq": 1}]}], "test")
    assert pdb.task_counts(conn)["total"] == 1


def test_seed_accepts_a_parent_later_in_the_same_batch(conn: sqlite3.Connection) -> None:
    ids = pdb.seed_tasks(conn, [{"goal": "child", "parent_task_id": "p"}, {"goal": "parent", "id": "p"}], "t")
    assert row(conn, ids[0])["parent_task_id"] == "p"
