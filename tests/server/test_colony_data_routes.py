"""The colony data browser over a real ``progress.db`` (SPEC C.5)."""

from __future__ import annotations

import sqlite3

import pytest

from apiary.storage.sqlite.data_browser import connect_read_only
from webclient_helpers import get_json, spawn_colony, waiting_session

TASKS = [{"goal": f"task {i}", "priority": i % 2, "payload": {"n": i}} for i in range(5)]
BASE = "/api/colonies/c/data/tables"


@pytest.fixture
async def colony(api):
    sid = await waiting_session(api)
    result = await spawn_colony(api, sid, tasks=TASKS)
    return result


async def test_tables_lists_colony_meta_first_with_columns_and_counts(api, colony):
    status, body = await get_json(api, BASE)
    assert status == 200
    names = [t["name"] for t in body["tables"]]
    assert names[0] == "colony_meta" and {"tasks", "steps", "sop_checklist"} <= set(names)
    tables = {t["name"]: t for t in body["tables"]}
    assert tables["tasks"]["row_count"] == 5 and tables["tasks"]["primary_key"] == ["id"]
    assert tables["colony_meta"]["row_count"] >= 1
    columns = {c["name"]: c for c in tables["tasks"]["columns"]}
    assert columns["id"] == {"name": "id", "type": "TEXT", "notnull": False, "pk": 1, "dflt_value": None}
    assert columns["status"]["notnull"] is True and columns["status"]["dflt_value"] == "'pending'"
    assert columns["priority"]["type"] == "INTEGER" and columns["priority"]["pk"] == 0


async def test_rows_default_page(api, colony):
    status, body = await get_json(api, f"{BASE}/tasks/rows")
    assert status == 200
    assert (body["table"], body["primary_key"], body["total"], body["limit"], body["offset"]) == (
        "tasks", ["id"], 5, 100, 0)
    assert [c["name"] for c in body["columns"]][:3] == ["id", "seq", "priority"]
    assert sorted(r["id"] for r in body["rows"]) == sorted(colony["task_ids"])
    assert {r["goal"] for r in body["rows"]} == {t["goal"] for t in TASKS}
    assert all(r["status"] == "pending" for r in body["rows"])
    assert [r["id"] for r in body["rows"]] == sorted(r["id"] for r in body["rows"])   # primary key order


async def test_rows_paging_and_ordering(api, colony):
    _, desc = await get_json(api, f"{BASE}/tasks/rows", order_by="goal", order_dir="desc")
    assert [r["goal"] for r in desc["rows"]] == [f"task {i}" for i in range(4, -1, -1)]
    _, page = await get_json(api, f"{BASE}/tasks/rows", order_by="goal", limit="2", offset="3")
    assert [r["goal"] for r in page["rows"]] == ["task 3", "task 4"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 3)
    _, upper = await get_json(api, f"{BASE}/tasks/rows", order_by="priority", order_dir="DESC", limit="5000")
    assert upper["limit"] == 1000 and [r["priority"] for r in upper["rows"]] == [1, 1, 0, 0, 0]
    _, empty = await get_json(api, f"{BASE}/tasks/rows", offset="10")
    assert empty["rows"] == [] and empty["total"] == 5


@pytest.mark.parametrize(("params", "error"), [
    ({"limit": "x"}, "limit must be an integer"),
    ({"limit": "0"}, "limit must be at least 1"),
    ({"limit": "-3"}, "limit must be at least 1"),
    ({"offset": "-1"}, "offset must be at least 0"),
    ({"offset": "1.5"}, "offset must be an integer"),
    ({"order_dir": "sideways"}, "order_dir must be 'asc' or 'desc'"),
    ({"order_by": "nope"}, "order_by: unknown column 'nope' in table 'tasks'"),
    ({"order_by": "id; DROP TABLE tasks"}, "order_by: unknown column 'id; DROP TABLE tasks' in table 'tasks'"),
])
async def test_bad_paging_parameters_are_400(api, colony, params, error):
    assert await get_json(api, f"{BASE}/tasks/rows", **params) == (400, {"error": error})
    _, body = await get_json(api, f"{BASE}/tasks/rows")
    assert body["total"] == 5


@pytest.mark.parametrize("table", ["nope", "tasks; DROP TABLE tasks", "sqlite_master", 'tasks"--'])
async def test_unknown_table_is_404(api, colony, table):
    resp = await api.get(f"{BASE}/{table}/rows")
    assert (resp.status, await resp.json()) == (404, {"error": f"Table '{table}' not found"})


@pytest.mark.parametrize(("name", "status", "error"), [
    ("nope", 404, "Colony 'nope' not found"),
    ("Bad-Name", 400, "Invalid path parameter"),
    ("a..b", 400, "Invalid path parameter"),
])
async def test_colony_name_errors(api, name, status, error):
    for path in (f"/api/colonies/{name}/data/tables", f"/api/colonies/{name}/data/tables/tasks/rows"):
        assert await get_json(api, path) == (status, {"error": error})


async def test_the_connection_is_read_only(api, colony):
    conn = connect_read_only(colony["db_path"])
    try:
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("DELETE FROM tasks")
    finally:
        conn.close()
    _, body = await get_json(api, f"{BASE}/tasks/rows")
    assert body["total"] == 5


async def test_blob_cells_travel_as_text(api, colony):
    conn = sqlite3.connect(colony["db_path"])
    conn.execute("CREATE TABLE extra (k INTEGER PRIMARY KEY, v BLOB)")
    conn.execute("INSERT INTO extra VALUES (1, x'00ff')")
    conn.commit()
    conn.close()
    _, body = await get_json(api, f"{BASE}/extra/rows")
    assert body["rows"] == [{"k": 1, "v": "AP8="}]
