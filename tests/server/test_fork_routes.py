"""Colony spawn, compact-and-fork and the session lock over HTTP (SPEC A 2.11-2.13, 3.2; B 6, 7, 8;
acceptance behaviours 1-13 of part B; C.6).

Everything runs with the demo model (or small variants of it) on a temporary APIARY_HOME.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from apiary.core.errors import ProviderError
from apiary.core.messages import is_well_formed, tool_calls_of
from apiary.llm.base import ModelRequest, ModelResponse
from apiary.llm.demo import DemoLLM
from apiary.llm.fake import FunctionLLM, Turn
from apiary.server.state import APP_STATE
from apiary.sessions.fork import QUEEN_ONLY_TOOLS
from helpers import create_session, wait_for_event

QUEEN = "queen_technology"
LOCK_FIELDS = ("colony_spawned", "spawned_colony_name", "spawned_colony_at")


# -- models ---------------------------------------------------------------------------------------


class SilentCompactionLLM(DemoLLM):
    """Streams like the demo model, but its one-shot call (compaction) never answers."""

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class FailingCompactionLLM(DemoLLM):
    """Streams like the demo model; compaction fails at once with a provider error."""

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        raise ProviderError("summariser exploded", retryable=False)


def dying_queen(spec: str) -> FunctionLLM:
    """A model whose every turn raises a non-provider error: the queen loop ends on its first turn."""
    return FunctionLLM(lambda request: Turn(error=RuntimeError("model crashed")))


# -- helpers --------------------------------------------------------------------------------------


def state(client: Any) -> Any:
    return client.app[APP_STATE]


def home_of(client: Any) -> Path:
    return state(client).settings.home_dir


def session_dir(client: Any, sid: str, queen: str = QUEEN) -> Path:
    return home_of(client) / "agents" / "queens" / queen / "sessions" / sid


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def stored_session_ids(client: Any) -> set[str]:
    return {p.name for p in (home_of(client) / "agents" / "queens").glob("*/sessions/*")}


def rows(db_path: Path | str, sql: str = "SELECT id, goal, status, source FROM tasks ORDER BY rowid") -> list[tuple]:
    conn = sqlite3.connect(str(db_path))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def parked_session(client: Any, **body: Any) -> str:
    """A new session whose queen has answered her greeting and waits for input."""
    sid = (await create_session(client, **body))["session_id"]
    await wait_for_event(client, sid, "client_input_requested")
    return sid


async def chat(client: Any, sid: str, message: str) -> None:
    resp = await client.post(f"/api/sessions/{sid}/chat", json={"message": message})
    assert resp.status == 200, await resp.text()
    after = (await resp.json())["after_seq"]
    await wait_for_event(client, sid, "client_input_requested", after=after)


async def spawn(client: Any, sid: str, **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/colony-spawn", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_marker(path: Path, *, timeout: float = 10.0) -> dict[str, Any]:
    """Poll compaction_status.json until it exists and is no longer in_progress."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            status = read(path)
        except (OSError, ValueError):
            status = None
        if isinstance(status, dict) and status.get("status") != "in_progress":
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} still {status!r} after {timeout}s")
        await asyncio.sleep(0.05)


async def wait_until(predicate: Any, *, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


async def conversation(client: Any, sid: str) -> Any:
    return await state(client).deps.stores.conversations.load(f"queen:{sid}")


async def event_log(client: Any, sid: str) -> list[Any]:
    return await state(client).deps.stores.events.read(sid)


def is_utc_iso(value: Any) -> bool:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0


async def dead_queen_session(client: Any) -> str:
    sid = (await create_session(client))["session_id"]
    live = state(client).sessions.loaded(sid)
    await wait_until(lambda: not live.queen.is_running, what="queen loop ended")
    return sid


# -- colony-spawn: checks before anything is written ---------------------------------------------


async def test_spawn_unknown_session_is_404(api):
    resp = await api.post("/api/sessions/session_nope/colony-spawn", json={"colony_name": "demo"})
    assert resp.status == 404
    assert await resp.json() == {"error": "Session 'session_nope' not found"}


async def test_spawn_503_when_queen_not_running_before_the_body_is_read(make_client):
    client = await make_client(llm_factory=dying_queen)
    sid = await dead_queen_session(client)
    before = stored_session_ids(client)
    # A malformed body would be a 400 if the body were read first.
    for data in (b"{not json", b'{"colony_name": "demo"}'):
        resp = await client.post(f"/api/sessions/{sid}/colony-spawn", data=data)
        assert resp.status == 503
        assert await resp.json() == {"error": "Queen is not running in this session."}
    assert not (home_of(client) / "colonies" / "demo").exists()
    assert stored_session_ids(client) == before


BAD_BODIES: list[tuple[Any, str]] = [
    (b"{oops", "Invalid JSON body"),
    (b"[1, 2]", "Request body must be a JSON object"),
    (b'"demo"', "Request body must be a JSON object"),
    ({}, "colony_name is required"),
    ({"colony_name": None}, "colony_name is required"),
    ({"colony_name": ""}, "colony_name is required"),
    ({"colony_name": "   "}, "colony_name is required"),
    ({"colony_name": 5}, "colony_name must be a string"),
    ({"colony_name": ["demo"]}, "colony_name must be a string"),
    ({"colony_name": "Demo"}, "colony_name must be lowercase alphanumeric with underscores"),
    ({"colony_name": "my-colony"}, "colony_name must be lowercase alphanumeric with underscores"),
    ({"colony_name": "a/b"}, "colony_name must be lowercase alphanumeric with underscores"),
    ({"colony_name": "x" * 256}, "Invalid path parameter"),
    ({"colony_name": "demo", "task": 3}, "task must be a string"),
    ({"colony_name": "demo", "task": {"goal": "a"}}, "task must be a string"),
    ({"colony_name": "demo", "tasks": {"goal": "a"}}, "tasks must be a list"),
    ({"colony_name": "demo", "tasks": "a"}, "tasks must be a list"),
    ({"colony_name": "demo", "tasks": [{"goal": "a"}, {}]}, "task[1] missing required 'goal' field"),
    ({"colony_name": "demo", "tasks": [{"goal": None}]}, "task[0] missing required 'goal' field"),
    ({"colony_name": "demo", "tasks": [{"goal": "  "}]}, "task[0] missing required 'goal' field"),
    ({"colony_name": "demo", "tasks": [{"goal": 7}]}, "task[0].goal must be a string"),
    ({"colony_name": "demo", "tasks": ["a"]}, "task[0] must be an object"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "priority": "high"}]}, "task[0].priority must be an integer"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "priority": True}]}, "task[0].priority must be an integer"),
    ({"colony_name": "demo", "tasks": [{"goal": "a"}, {"goal": "b", "seq": 1.5}]}, "task[1].seq must be an integer"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "max_retries": "3"}]}, "task[0].max_retries must be an integer"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "id": 12}]}, "task[0].id must be a string"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "parent_task_id": 1}]}, "task[0].parent_task_id must be a string"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "steps": "do it"}]}, "task[0].steps must be a list"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "steps": [{"detail": "x"}]}]},
     "task[0].steps[0] missing required 'title' field"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "sop_items": {}}]}, "task[0].sop_items must be a list"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "sop_items": [{"key": "k"}]}]},
     "task[0].sop_items[0] missing required 'description' field"),
    ({"colony_name": "demo", "tasks": [{"goal": "a", "sop_items": [{"key": "k", "description": "d",
                                                                    "required": "yes"}]}]},
     "task[0].sop_items[0].required must be a boolean"),
]


@pytest.mark.parametrize(("body", "error"), BAD_BODIES, ids=[e for _, e in BAD_BODIES])
async def test_spawn_body_errors_leave_nothing_behind(api, body, error):
    sid = await parked_session(api)
    before = stored_session_ids(api)
    url = f"/api/sessions/{sid}/colony-spawn"
    resp = await (api.post(url, data=body) if isinstance(body, bytes) else api.post(url, json=body))
    assert resp.status == 400
    assert await resp.json() == {"error": error}
    colonies = home_of(api) / "colonies"
    assert not colonies.exists() or list(colonies.iterdir()) == []
    assert not (home_of(api) / "agents" / "demo").exists()
    assert stored_session_ids(api) == before
    assert "agent_path" not in read(session_dir(api, sid) / "meta.json")


async def test_invalid_second_spawn_changes_nothing_in_an_existing_colony(api):
    sid = await parked_session(api)
    first = await spawn(api, sid, colony_name="demo", tasks=[{"goal": "a"}])
    metadata = read(Path(first["colony_path"]) / "metadata.json")
    worker = read(Path(first["colony_path"]) / "worker.json")
    before = stored_session_ids(api)
    resp = await api.post(f"/api/sessions/{sid}/colony-spawn",
                          json={"colony_name": "demo", "tasks": [{"goal": "b"}, {"priority": 1}]})
    assert resp.status == 400
    assert await resp.json() == {"error": "task[1] missing required 'goal' field"}
    assert [r[1] for r in rows(first["db_path"])] == ["a"]
    assert read(Path(first["colony_path"]) / "metadata.json") == metadata
    assert read(Path(first["colony_path"]) / "worker.json") == worker
    assert stored_session_ids(api) == before


async def test_seed_failure_in_the_database_fails_the_spawn_and_removes_the_copy(api):
    sid = await parked_session(api)
    first = await spawn(api, sid, colony_name="demo", tasks=[{"id": "t1", "goal": "a"}])
    await wait_marker(session_dir(api, first["queen_session_id"]) / "compaction_status.json")
    before = stored_session_ids(api)
    metadata = read(Path(first["colony_path"]) / "metadata.json")
    # The id exists already: the seed transaction fails as a whole.
    resp = await api.post(f"/api/sessions/{sid}/colony-spawn",
                          json={"colony_name": "demo", "tasks": [{"id": "t2", "goal": "b"}, {"id": "t1", "goal": "c"}]})
    assert 400 <= resp.status < 500, await resp.text()
    assert "t1" in (await resp.json())["error"]
    assert rows(first["db_path"], "SELECT id, goal FROM tasks ORDER BY rowid") == [("t1", "a")]
    assert stored_session_ids(api) == before
    assert read(Path(first["colony_path"]) / "metadata.json") == metadata


async def test_failed_spawn_into_an_existing_colony_puts_it_back(api, monkeypatch):
    sid = await parked_session(api)
    first = await spawn(api, sid, colony_name="demo", tasks=[{"goal": "a"}])
    colony = Path(first["colony_path"])
    files = {name: (colony / name).read_bytes() for name in ("worker.json", "metadata.json")}
    source_meta = read(session_dir(api, sid) / "meta.json")
    before = stored_session_ids(api)
    import apiary.sessions.fork as fork

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(fork, "_write_metadata", broken)
    resp = await api.post(f"/api/sessions/{sid}/colony-spawn",
                          json={"colony_name": "demo", "tasks": [{"goal": "b"}, {"goal": "c"}]})
    assert resp.status == 500
    assert await resp.json() == {"error": "colony fork failed: disk on fire"}
    assert [r[1] for r in rows(first["db_path"])] == ["a"]
    assert {name: (colony / name).read_bytes() for name in files} == files
    assert stored_session_ids(api) == before
    assert read(session_dir(api, sid) / "meta.json") == source_meta


async def test_unknown_parent_task_is_a_400_not_a_500(api):
    sid = await parked_session(api)
    before = stored_session_ids(api)
    resp = await api.post(f"/api/sessions/{sid}/colony-spawn",
                          json={"colony_name": "demo", "tasks": [{"goal": "a", "parent_task_id": "nope"}]})
    assert resp.status == 400
    assert await resp.json() == {"error": "task[0].parent_task_id 'nope' does not exist"}
    assert not (home_of(api) / "colonies" / "demo").exists()
    assert stored_session_ids(api) == before


async def test_unexpected_failure_is_500_and_removes_what_the_fork_created(api, monkeypatch):
    sid = await parked_session(api)
    before = stored_session_ids(api)
    import apiary.sessions.fork as fork

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(fork, "_write_metadata", broken)
    resp = await api.post(f"/api/sessions/{sid}/colony-spawn", json={"colony_name": "demo", "task": "x"})
    assert resp.status == 500
    assert await resp.json() == {"error": "colony fork failed: disk on fire"}
    assert not (home_of(api) / "colonies" / "demo").exists()
    assert stored_session_ids(api) == before
    assert "agent_path" not in read(session_dir(api, sid) / "meta.json")


# -- colony-spawn: what a successful spawn writes ------------------------------------------------


async def test_spawn_with_tasks_seeds_rows_in_input_order(api):
    sid = await parked_session(api)
    result = await spawn(api, sid, colony_name="demo", tasks=[{"goal": "a"}, {"goal": "b"}])
    home = home_of(api)
    colony = home / "colonies" / "demo"
    assert set(result) == {"colony_path", "colony_name", "queen_session_id", "is_new", "db_path", "task_ids",
                           "compaction_status"}
    assert Path(result["colony_path"]) == colony
    assert result["colony_name"] == "demo"
    assert result["is_new"] is True
    assert Path(result["db_path"]) == colony / "data" / "progress.db"
    assert Path(result["db_path"]).is_absolute()
    assert result["compaction_status"] == "in_progress"
    assert result["queen_session_id"] != sid
    found = rows(result["db_path"])
    assert [r[0] for r in found] == result["task_ids"]
    assert [(r[1], r[2], r[3]) for r in found] == [("a", "pending", "queen_create"), ("b", "pending", "queen_create")]
    assert len(set(result["task_ids"])) == 2
    worker = read(colony / "worker.json")
    assert worker["input_data"]["task_id"] == result["task_ids"][0]
    assert worker["input_data"]["db_path"] == result["db_path"]
    assert worker["input_data"]["colony_id"] == "demo"


async def test_task_ids_follow_the_input_order_not_the_id_order(api):
    sid = await parked_session(api)
    result = await spawn(api, sid, colony_name="ordered",
                         tasks=[{"id": "t9", "goal": "first"}, {"id": "t1", "goal": "second", "priority": 5},
                                {"goal": "third", "steps": [{"title": "s"}], "sop_items": [{"key": "k",
                                                                                             "description": "d"}]}])
    assert result["task_ids"][:2] == ["t9", "t1"]
    by_id = {r[0]: r[1] for r in rows(result["db_path"])}
    assert [by_id[i] for i in result["task_ids"]] == ["first", "second", "third"]
    third = result["task_ids"][2]
    assert rows(result["db_path"], f"SELECT title FROM steps WHERE task_id = '{third}'") == [("s",)]
    assert rows(result["db_path"], f"SELECT key, required FROM sop_checklist WHERE task_id = '{third}'") == [("k", 1)]


async def test_spawn_with_only_a_task_seeds_one_auto_row(api):
    sid = await parked_session(api)
    result = await spawn(api, sid, colony_name="solo", task="x")
    found = rows(result["db_path"])
    assert [(r[1], r[2], r[3]) for r in found] == [("x", "pending", "create_colony_auto")]
    assert result["task_ids"] == [found[0][0]]
    worker = read(Path(result["colony_path"]) / "worker.json")
    assert worker["input_data"]["task_id"] == found[0][0]
    assert worker["system_prompt"].endswith("Task: x")


async def test_spawn_without_task_seeds_nothing(api):
    sid = await parked_session(api)
    for body in ({"colony_name": "empty"}, {"colony_name": "blank", "task": "   ", "tasks": []}):
        result = await spawn(api, sid, **body)
        assert result["task_ids"] == []
        assert rows(result["db_path"]) == []
        worker = read(Path(result["colony_path"]) / "worker.json")
        assert "task_id" not in worker["input_data"]
        assert worker["system_prompt"].endswith("Task: Continue the work from the queen's current session.")


async def test_second_spawn_keeps_rows_and_created_at(api):
    sid = await parked_session(api)
    first = await spawn(api, sid, colony_name="demo", tasks=[{"goal": "a"}])
    meta_path = Path(first["colony_path"]) / "metadata.json"
    before = read(meta_path)
    second = await spawn(api, sid, colony_name="demo", task="b")
    assert second["is_new"] is False
    assert second["queen_session_id"] not in (first["queen_session_id"], sid)
    found = rows(second["db_path"])
    assert [(r[1], r[3]) for r in found] == [("a", "queen_create"), ("b", "create_colony_auto")]
    assert second["task_ids"] == [found[1][0]]
    after = read(meta_path)
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] != before["updated_at"]
    assert after["queen_session_id"] == second["queen_session_id"]
    assert after["source_session_id"] == sid
    assert after["colony_name"] == "demo"
    assert after["queen_name"] == QUEEN
    assert after["workers"]["worker"]["task"] == "b"


async def test_is_new_is_true_when_the_folder_exists_without_worker_json(api):
    sid = await parked_session(api)
    (home_of(api) / "colonies" / "prepared").mkdir(parents=True)
    result = await spawn(api, sid, colony_name="prepared")
    assert result["is_new"] is True
    assert (home_of(api) / "colonies" / "prepared" / "worker.json").exists()


async def test_worker_json_fields(api):
    sid = await parked_session(api)
    result = await spawn(api, sid, colony_name="demo", task="write the report")
    colony = Path(result["colony_path"])
    worker = read(colony / "worker.json")
    assert (colony / "worker.json").read_text().startswith('{\n  "')   # indented 2
    live = state(api).sessions.loaded(sid)
    assert worker["name"] == "worker"
    assert worker["version"] == "1.0.0"
    assert worker["description"] == f"Worker clone from queen session {sid}"
    assert worker["input_data"]["colony_data_dir"] == str(colony / "data")
    assert worker["goal"]["description"] == "write the report"
    assert worker["system_prompt"].endswith("\n\nTask: write the report")
    assert "set_output" in worker["system_prompt"] and "escalate" in worker["system_prompt"]
    assert live.profile.persona not in worker["system_prompt"]
    assert worker["identity_prompt"] == ""
    assert worker["memory_prompt"] == ""
    assert worker["queen_id"] == QUEEN
    assert worker["queen_phase"] == live.phase
    assert worker["spawned_from"] == sid
    assert is_utc_iso(worker["spawned_at"])
    assert len(QUEEN_ONLY_TOOLS) == 15
    assert isinstance(worker["tools"], list) and worker["tools"]
    assert not set(worker["tools"]) & QUEEN_ONLY_TOOLS
    queen_tools = live.available_queen_tools().names()
    assert worker["tools"] == [n for n in queen_tools if n not in QUEEN_ONLY_TOOLS]
    config = live.queen.loop.ctx.config
    assert worker["loop_config"] == {"max_iterations": config.max_iterations,
                                     "max_tool_calls_per_turn": config.max_tool_calls_per_turn,
                                     "max_context_tokens": config.max_context_tokens,
                                     "max_tool_result_chars": config.max_tool_result_chars}
    for key in ("skills_catalog_prompt", "protocols_prompt", "skill_dirs"):
        assert key in worker


async def test_fork_copy_meta_and_display_name(api):
    sid = await parked_session(api)
    api_result = await spawn(api, sid, colony_name="honey_comb", task="x")
    # Lock the source first in a second run so that the copy is seen to drop the lock fields.
    copy_id = api_result["queen_session_id"]
    copy_dir = session_dir(api, copy_id)
    assert copy_dir.is_dir()
    meta = read(copy_dir / "meta.json")
    assert meta["colony_fork"] is True
    assert meta["forked_from"] == sid
    assert meta["agent_name"] == "Honey Comb"
    assert meta["agent_path"] == api_result["colony_path"]
    assert meta["queen_id"] == QUEEN
    source_meta = read(session_dir(api, sid) / "meta.json")
    assert source_meta["agent_name"] == "Honey Comb"
    assert source_meta["agent_path"] == api_result["colony_path"]
    # The spawn neither locks the source nor loads a colony into it.
    assert not set(LOCK_FIELDS) & set(source_meta)
    body = await (await api.get(f"/api/sessions/{sid}")).json()
    assert body["colony_spawned"] is False
    assert body["has_worker"] is False
    # Colony copies are hidden from the DM history.
    history = await (await api.get("/api/sessions/history")).json()
    assert copy_id not in [item["session_id"] for item in history["sessions"]]
    assert sid in [item["session_id"] for item in history["sessions"]]


async def test_fork_copy_of_a_locked_session_has_no_lock_fields(api):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/mark-colony-spawned", json={"colony_name": "earlier"})
    assert resp.status == 200
    result = await spawn(api, sid, colony_name="honey_comb")
    meta = read(session_dir(api, result["queen_session_id"]) / "meta.json")
    assert not set(LOCK_FIELDS) & set(meta)
    assert meta["colony_fork"] is True
    source = read(session_dir(api, sid) / "meta.json")
    assert source["colony_spawned"] is True and source["spawned_colony_name"] == "earlier"


async def test_tools_json_follows_the_queen_tool_settings(api):
    sid = await parked_session(api)
    queen_dir = home_of(api) / "agents" / "queens" / QUEEN
    (queen_dir / "tools.json").write_text(json.dumps({"enabled_mcp_tools": ["read_file"]}))
    result = await spawn(api, sid, colony_name="demo")
    tools = read(Path(result["colony_path"]) / "tools.json")
    assert tools["enabled_mcp_tools"] == ["read_file"]


async def test_compaction_job_done_marker_summary_and_worker_copy(api):
    sid = await parked_session(api)
    await chat(api, sid, "please plan the release")
    source_before = await conversation(api, sid)
    result = await spawn(api, sid, colony_name="honey_comb", task="x")
    copy_id = result["queen_session_id"]
    marker = await wait_marker(session_dir(api, copy_id) / "compaction_status.json")
    assert marker["status"] == "done"
    assert is_utc_iso(marker["completed_at"])
    conv = await conversation(api, copy_id)
    assert len(conv.messages) == 1
    summary = conv.messages[0]
    assert summary["seq"] == 0
    assert summary["role"] == "user"
    assert summary["inherited_from"] == sid
    assert "please plan the release" in summary["content"]
    assert conv.cursor == {"next_seq": 1}
    assert conv.partials == {}
    assert marker["messages_compacted"] == len([m for m in source_before.messages if is_well_formed(m)])
    assert marker["summary_chars"] == len(summary["content"])
    log = await event_log(api, copy_id)
    assert log[-1].type == "colony_fork_marker"
    assert log[-1].event.data["parent_session_id"] == sid
    assert log[-1].event.data["summary_preview"] == summary["content"][:240]
    assert [e.id for e in log] == list(range(1, len(log) + 1))
    # The worker's copy of the inherited conversation, as files.
    parts = home_of(api) / "agents" / "honey_comb" / "worker" / "conversations" / "parts"
    assert sorted(p.name for p in parts.glob("*.json")) == ["0000000000.json"]
    assert read(parts / "0000000000.json")["content"] == summary["content"]
    # The source is not compacted.
    assert (await conversation(api, sid)).messages == source_before.messages


async def test_compaction_status_events_on_the_source(api):
    sid = await parked_session(api)
    result = await spawn(api, sid, colony_name="demo")
    await wait_marker(session_dir(api, result["queen_session_id"]) / "compaction_status.json")
    events = await wait_for_event(api, sid, "custom", count=2)
    statuses = [e["data"] for e in events if e["data"].get("name") == "colony_compaction_status"]
    assert statuses == [
        {"name": "colony_compaction_status", "colony_name": "demo", "queen_session_id": result["queen_session_id"],
         "status": s} for s in ("in_progress", "done")]
    assert all(e["stream_id"] == "queen" for e in events)
    created = await wait_for_event(api, sid, "colony_created")
    assert created[0]["data"]["queen_session_id"] == result["queen_session_id"]


async def test_compaction_failure_keeps_the_raw_transcript(make_client):
    client = await make_client(llm_factory=lambda spec: FailingCompactionLLM())
    sid = await parked_session(client)
    await chat(client, sid, "remember the milk")
    raw = (await conversation(client, sid)).messages
    result = await spawn(client, sid, colony_name="demo")
    copy_id = result["queen_session_id"]
    marker = await wait_marker(session_dir(client, copy_id) / "compaction_status.json")
    assert marker["status"] == "failed"
    assert "summariser exploded" in marker["error"]
    assert (await conversation(client, copy_id)).messages == raw
    log = await event_log(client, copy_id)
    assert "colony_fork_marker" not in [e.type for e in log]
    parts = home_of(client) / "agents" / "demo" / "worker" / "conversations" / "parts"
    assert (parts / "0000000000.json").exists()
    assert len(list(parts.glob("*.json"))) == len(raw)
    events = await wait_for_event(client, sid, "custom", count=2)
    assert [e["data"]["status"] for e in events] == ["in_progress", "failed"]


async def test_opening_the_colony_uses_the_metadata_session_id(api):
    sid = await parked_session(api)
    await chat(api, sid, "build the hive")
    result = await spawn(api, sid, colony_name="honey_comb", task="x")
    resp = await api.post("/api/sessions", json={"agent_path": result["colony_path"], "session_id": "other"})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["session_id"] == result["queen_session_id"]
    assert body["has_worker"] is True
    assert body["colony_id"] == "honey_comb"
    assert body["colony_name"] == "Honey Comb"
    assert body["agent_path"] == result["colony_path"]
    assert body["colony_spawned"] is False
    # The route waited for the compaction: the opened session starts from the summary.
    marker = read(session_dir(api, result["queen_session_id"]) / "compaction_status.json")
    assert marker["status"] == "done"
    conv = await conversation(api, result["queen_session_id"])
    assert conv.messages[0]["inherited_from"] == sid
    assert "build the hive" in conv.messages[0]["content"]
    assert state(api).sessions.loaded("other") is None
    # Opened again with the same colony: the same live session.
    again = await api.post("/api/sessions", json={"agent_path": result["colony_path"],
                                                 "queen_resume_from": sid})
    assert again.status == 201
    assert (await again.json())["session_id"] == result["queen_session_id"]


# -- mark-colony-spawned -------------------------------------------------------------------------


async def test_mark_colony_spawned_locks_and_survives_a_restart(make_client):
    client = await make_client()
    sid = await parked_session(client)
    resp = await client.post(f"/api/sessions/{sid}/mark-colony-spawned", json={"colony_name": "  Demo/Thing  "})
    assert resp.status == 200
    assert await resp.json() == {"session_id": sid, "colony_spawned": True, "spawned_colony_name": "Demo/Thing"}
    meta = read(session_dir(client, sid) / "meta.json")
    assert meta["colony_spawned"] is True
    assert meta["spawned_colony_name"] == "Demo/Thing"
    assert is_utc_iso(meta["spawned_colony_at"])
    body = await (await client.get(f"/api/sessions/{sid}")).json()
    assert body["colony_spawned"] is True and body["spawned_colony_name"] == "Demo/Thing"
    # Chat is refused before its body is read.
    for data in (b'{"message": "hi"}', b"{broken"):
        chat_resp = await client.post(f"/api/sessions/{sid}/chat", data=data)
        assert chat_resp.status == 409
        refused = await chat_resp.json()
        assert refused["error"] == "session_locked"
        assert refused["reason"] == "colony_spawned"
        assert refused["spawned_colony_name"] == "Demo/Thing"
        assert isinstance(refused["message"], str) and refused["message"]
    # Calling again replaces the name.
    resp = await client.post(f"/api/sessions/{sid}/mark-colony-spawned", json={"colony_name": "demo"})
    assert (await resp.json())["spawned_colony_name"] == "demo"
    assert read(session_dir(client, sid) / "meta.json")["spawned_colony_name"] == "demo"
    await client.close()

    restarted = await make_client()
    cold = await (await restarted.get(f"/api/sessions/{sid}")).json()
    assert cold["cold"] is True
    assert cold["colony_spawned"] is True and cold["spawned_colony_name"] == "demo"
    chat_resp = await restarted.post(f"/api/sessions/{sid}/chat", json={"message": "hi"})
    assert chat_resp.status == 409
    assert (await chat_resp.json())["spawned_colony_name"] == "demo"
    body = await (await restarted.get(f"/api/sessions/{sid}")).json()
    assert body["colony_spawned"] is True


MARK_BAD: list[tuple[Any, str]] = [
    (b"{x", "Invalid JSON body"),
    (b"[]", "Request body must be a JSON object"),
    (b"", "colony_name is required"),
    ({}, "colony_name is required"),
    ({"colony_name": None}, "colony_name is required"),
    ({"colony_name": " \t "}, "colony_name is required"),
    ({"colony_name": 1}, "colony_name must be a string"),
    ({"colony_name": True}, "colony_name must be a string"),
]


@pytest.mark.parametrize(("body", "error"), MARK_BAD, ids=[repr(b) for b, _ in MARK_BAD])
async def test_mark_colony_spawned_body_errors_do_not_lock(api, body, error):
    sid = await parked_session(api)
    url = f"/api/sessions/{sid}/mark-colony-spawned"
    resp = await (api.post(url, data=body) if isinstance(body, bytes) else api.post(url, json=body))
    assert resp.status == 400
    assert await resp.json() == {"error": error}
    assert not set(LOCK_FIELDS) & set(read(session_dir(api, sid) / "meta.json"))
    assert (await (await api.get(f"/api/sessions/{sid}")).json())["colony_spawned"] is False


async def test_mark_colony_spawned_unknown_session(api):
    resp = await api.post("/api/sessions/session_x/mark-colony-spawned", json={"colony_name": "demo"})
    assert resp.status == 404


async def test_mark_colony_spawned_persist_failure_does_not_lock(api, monkeypatch):
    sid = await parked_session(api)
    from apiary.sessions.files import StoredSession

    def broken(self: Any, updates: dict[str, Any], *, remove: tuple[str, ...] = ()) -> dict[str, Any]:
        raise OSError("read-only file system")

    monkeypatch.setattr(StoredSession, "merge_meta", broken)
    resp = await api.post(f"/api/sessions/{sid}/mark-colony-spawned", json={"colony_name": "demo"})
    assert resp.status == 500
    assert await resp.json() == {"error": "failed to persist: read-only file system"}
    monkeypatch.undo()
    assert (await (await api.get(f"/api/sessions/{sid}")).json())["colony_spawned"] is False
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "still open"})
    assert resp.status == 200


# -- compact-and-fork ----------------------------------------------------------------------------


async def test_compact_and_fork_unknown_session(api):
    resp = await api.post("/api/sessions/session_nope/compact-and-fork")
    assert resp.status == 404
    assert await resp.json() == {"error": "Session 'session_nope' not found"}


async def test_compact_and_fork_without_a_stored_directory_is_404_before_503(make_client):
    import shutil

    client = await make_client(llm_factory=dying_queen)
    sid = await dead_queen_session(client)
    shutil.rmtree(session_dir(client, sid))
    resp = await client.post(f"/api/sessions/{sid}/compact-and-fork")
    assert resp.status == 404
    assert await resp.json() == {"error": "queen session directory not found"}


async def test_compact_and_fork_queen_not_running(make_client):
    client = await make_client(llm_factory=dying_queen)
    sid = await dead_queen_session(client)
    before = stored_session_ids(client)
    resp = await client.post(f"/api/sessions/{sid}/compact-and-fork", data=b"{ignored")
    assert resp.status == 503
    assert await resp.json() == {"error": "queen is not running"}
    assert stored_session_ids(client) == before


async def test_compact_and_fork_empty_conversation(api):
    sid = await parked_session(api)
    await state(api).deps.stores.conversations.delete(f"queen:{sid}")
    before = stored_session_ids(api)
    resp = await api.post(f"/api/sessions/{sid}/compact-and-fork")
    assert resp.status == 400
    assert await resp.json() == {"error": "queen conversation is empty -- nothing to compact"}
    assert stored_session_ids(api) == before


async def test_compact_and_fork_compaction_failure_leaves_nothing(make_client):
    client = await make_client(llm_factory=lambda spec: FailingCompactionLLM())
    sid = await parked_session(client)
    before = stored_session_ids(client)
    resp = await client.post(f"/api/sessions/{sid}/compact-and-fork")
    assert resp.status == 500
    assert await resp.json() == {"error": "compaction failed: summariser exploded"}
    assert stored_session_ids(client) == before
    assert list(state(client).sessions.live) == [sid]


async def test_compact_and_fork_copy_failure_leaves_nothing(api, monkeypatch):
    sid = await parked_session(api)
    before = stored_session_ids(api)
    conversations = state(api).deps.stores.conversations

    async def broken(owner: str, messages: list[Any], cursor: Any) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(conversations, "replace", broken)
    resp = await api.post(f"/api/sessions/{sid}/compact-and-fork")
    assert resp.status == 500
    assert await resp.json() == {"error": "failed to fork session dir: no space left on device"}
    assert stored_session_ids(api) == before
    assert list(state(api).sessions.live) == [sid]


async def test_compact_and_fork_start_failure_leaves_nothing(api, monkeypatch):
    sid = await parked_session(api)
    before = stored_session_ids(api)
    manager = state(api).sessions

    async def broken(**kwargs: Any) -> None:
        raise RuntimeError("cannot start")

    monkeypatch.setattr(manager, "create", broken)
    resp = await api.post(f"/api/sessions/{sid}/compact-and-fork")
    assert resp.status == 500
    assert await resp.json() == {"error": "failed to start forked session: cannot start"}
    monkeypatch.undo()
    assert stored_session_ids(api) == before
    assert list(manager.live) == [sid]


async def test_compact_and_fork_after_a_spawn_and_lock(api):
    sid = await parked_session(api)
    await chat(api, sid, "first request")
    await chat(api, sid, 'demo:tool read_file {"path": "missing.txt"}')
    result = await spawn(api, sid, colony_name="honey_comb", task="x")
    await wait_marker(session_dir(api, result["queen_session_id"]) / "compaction_status.json")
    await wait_for_event(api, sid, "custom", count=2)   # the fork job's last event on the source
    resp = await api.post(f"/api/sessions/{sid}/mark-colony-spawned", json={"colony_name": "honey_comb"})
    assert resp.status == 200
    source_conv = await conversation(api, sid)
    source_meta = read(session_dir(api, sid) / "meta.json")
    source_events = await event_log(api, sid)

    resp = await api.post(f"/api/sessions/{sid}/compact-and-fork", data=b"not even json")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"new_session_id", "queen_id", "compacted_from", "summary_chars", "messages_compacted"}
    new_id = body["new_session_id"]
    assert new_id not in (sid, result["queen_session_id"])
    assert body["queen_id"] == QUEEN
    assert body["compacted_from"] == sid
    well_formed = [m for m in source_conv.messages if is_well_formed(m)]
    assert body["messages_compacted"] == len(well_formed)

    # The new session: one summary message, no events, provenance, no lock and no colony link.
    conv = await conversation(api, new_id)
    assert len(conv.messages) >= 1
    summary = conv.messages[0]
    assert summary["role"] == "user" and summary["seq"] == 0
    assert "inherited_from" not in summary
    assert body["summary_chars"] == len(summary["content"])
    assert "[U1]" in summary["content"] and "first request" in summary["content"]
    assert "TOOLS ALREADY CALLED:" in summary["content"] and "read_file" in summary["content"]
    # No event of the source came along: the log starts afresh at id 1 (the restored queen may
    # already have announced herself there).
    new_log = await event_log(api, new_id)
    assert [e.id for e in new_log] == list(range(1, len(new_log) + 1))
    assert not {"client_input_received", "colony_created", "custom", "llm_turn_complete"} & {e.type for e in new_log}
    meta = read(session_dir(api, new_id) / "meta.json")
    assert meta["compacted_from"] == sid
    assert is_utc_iso(meta["compacted_at"])
    assert meta["queen_id"] == QUEEN
    assert isinstance(meta["created_at"], float) and meta["created_at"] >= source_meta["created_at"]
    for key in (*LOCK_FIELDS, "agent_path", "agent_name", "colony_fork", "forked_from"):
        assert key not in meta
    detail = await (await api.get(f"/api/sessions/{new_id}")).json()
    assert detail.get("cold") is None
    assert detail["has_worker"] is False
    assert detail["agent_path"] == ""
    assert detail["queen_phase"] == "independent"
    assert detail["colony_spawned"] is False
    assert detail["queen_id"] == QUEEN
    assert not (session_dir(api, new_id) / "compaction_status.json").exists()
    # It is a live session whose queen takes a message at once.
    resp = await api.post(f"/api/sessions/{new_id}/chat", json={"message": "go on"})
    assert resp.status == 200
    history = await (await api.get(f"/api/sessions/{new_id}/events/history")).json()
    assert history["events"][0]["id"] == 1

    # The source stays live, locked and unchanged.
    assert state(api).sessions.loaded(sid) is not None
    assert (await conversation(api, sid)).messages == source_conv.messages
    assert read(session_dir(api, sid) / "meta.json") == source_meta
    assert [e.id for e in await event_log(api, sid)] == [e.id for e in source_events]
    locked = await api.post(f"/api/sessions/{sid}/chat", json={"message": "hi"})
    assert locked.status == 409


async def test_compact_and_fork_twice_gives_two_sessions(api):
    sid = await parked_session(api)
    first = await (await api.post(f"/api/sessions/{sid}/compact-and-fork")).json()
    second = await (await api.post(f"/api/sessions/{sid}/compact-and-fork")).json()
    assert first["new_session_id"] != second["new_session_id"]
    assert {first["new_session_id"], second["new_session_id"]} <= set(state(api).sessions.live)


# -- compaction timeout and restarts (acceptance 8-10) -------------------------------------------


async def test_compaction_timeout_marks_failed_and_keeps_raw_parts(make_client):
    client = await make_client(colonies={"compaction_timeout_s": 1}, llm_factory=lambda spec: SilentCompactionLLM())
    sid = await parked_session(client)
    await chat(client, sid, "keep me raw")
    raw = (await conversation(client, sid)).messages
    result = await spawn(client, sid, colony_name="slow")
    assert result["compaction_status"] == "in_progress"
    copy_id = result["queen_session_id"]
    marker = await wait_marker(session_dir(client, copy_id) / "compaction_status.json")
    assert marker["status"] == "failed"
    assert "timed out" in marker["error"]
    assert len(marker["error"]) <= 500
    assert is_utc_iso(marker["completed_at"])
    assert (await conversation(client, copy_id)).messages == raw
    parts = home_of(client) / "agents" / "slow" / "worker" / "conversations" / "parts"
    assert (parts / "0000000000.json").exists()
    assert [read(p)["content"] for p in sorted(parts.glob("*.json"))] == [m["content"] for m in raw]
    events = await wait_for_event(client, sid, "custom", count=2)
    assert [e["data"]["status"] for e in events] == ["in_progress", "failed"]


async def test_restart_while_compaction_runs_marks_it_failed(make_client):
    client = await make_client(llm_factory=lambda spec: SilentCompactionLLM())
    sid = await parked_session(client)
    result = await spawn(client, sid, colony_name="slow")
    copy_id = result["queen_session_id"]
    marker_path = session_dir(client, copy_id) / "compaction_status.json"
    llm = state(client).sessions.loaded(sid).llm
    await wait_until(lambda: bool(llm.requests) and llm.requests[-1].system.startswith("Summarise"),
                     what="compaction call started")
    assert read(marker_path)["status"] == "in_progress"
    await client.close()
    assert read(marker_path)["status"] == "in_progress"

    restarted = await make_client()
    marker = read(marker_path)
    assert marker["status"] == "failed"
    assert marker["error"] == "server restarted while compaction was in progress"
    assert is_utc_iso(marker["completed_at"])
    # Opening the colony does not wait on a failed marker, and uses the copy with its raw transcript.
    resp = await restarted.post("/api/sessions", json={"agent_path": result["colony_path"]})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["session_id"] == copy_id


# -- C.6: spawn at once on a session whose queen is still answering -------------------------------




async def test_spawn_right_after_creation_is_always_consistent(make_client, caplog):
    client = await make_client(llm_factory=lambda spec: FailingCompactionLLM())
    prompt = 'demo:tool read_file {"path": "notes.txt"}\ndemo:delay 1'
    spawned: list[dict[str, Any]] = []
    for i in range(30):
        resp = await client.post(f"/api/queen/{QUEEN}/session/new", json={"initial_prompt": prompt})
        assert resp.status == 200, await resp.text()
        sid = (await resp.json())["session_id"]
        resp = await client.post(f"/api/sessions/{sid}/colony-spawn", json={"colony_name": f"c{i}", "task": "t"})
        assert resp.status < 500, await resp.text()
        assert not any("cannot start a transaction" in r.getMessage() for r in caplog.records)
        assert resp.status == 200, await resp.text()
        spawned.append(await resp.json())
    for result in spawned:
        copy_id = result["queen_session_id"]
        copy_dir = session_dir(client, copy_id)
        marker = await wait_marker(copy_dir / "compaction_status.json")
        conv = await conversation(client, copy_id)
        # The raw transcript stays (compaction fails), so the snapshot itself can be checked; a copy
        # taken before the queen stored her first message has nothing to compact and is "done".
        assert marker["status"] == ("failed" if conv.messages else "done")
        assert not [p.name for p in copy_dir.rglob(".*")]   # no half-written temporary files copied
        assert read(copy_dir / "meta.json")["colony_fork"] is True
        assert all(is_well_formed(m) for m in conv.messages)
        seqs = [m["seq"] for m in conv.messages]
        assert seqs == list(range(len(seqs)))
        calls = [c.id for m in conv.messages for c in tool_calls_of(m)]
        results = [m.get("tool_use_id") for m in conv.messages if m["role"] == "tool"]
        assert sorted(results) == sorted(calls)   # every call has exactly one result
        parts = home_of(client) / "agents" / result["colony_name"] / "worker" / "conversations" / "parts"
        assert [read(p) for p in sorted(parts.glob("*.json"))] == conv.messages
