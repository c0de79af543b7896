"""The colony list and deleting a colony (SPEC C.1, C.5)."""

from __future__ import annotations

import json

import pytest

from helpers import wait_for_event
from webclient_helpers import get_json, home_of, open_colony, spawn_colony, state, waiting_session


async def test_discover_is_empty_without_colonies(api):
    assert await get_json(api, "/api/discover") == (200, {})


async def test_discover_lists_colonies_with_their_worker_sessions_and_runs(api):
    sid = await waiting_session(api)
    spawned = await spawn_colony(api, sid, "honey_comb", tasks=[{"goal": "count the bees"}])
    (home_of(api) / "colonies" / "not_a_colony").mkdir()   # no worker spec: not listed
    status, body = await get_json(api, "/api/discover")
    assert status == 200 and list(body) == ["Colonies"]
    [entry] = body["Colonies"]
    assert entry["path"] == spawned["colony_path"] and entry["path"].endswith("/honey_comb")
    assert entry["name"] == "Honey Comb" and isinstance(entry["description"], str)
    assert (entry["session_count"], entry["run_count"]) == (0, 0)
    assert isinstance(entry["created_at"], str) and isinstance(entry["last_active"], str)
    assert entry["workers"] == [{"queen_name": "queen_technology", "task": "count the bees"}]
    assert entry["icon"] is None
    colony_sid = (await open_colony(api, spawned["colony_path"]))["session_id"]
    resp = await api.post(f"/api/sessions/{colony_sid}/trigger", json={})
    assert resp.status == 200, await resp.text()
    await wait_for_event(api, colony_sid, "execution_completed")
    [entry] = (await get_json(api, "/api/discover"))[1]["Colonies"]
    assert (entry["session_count"], entry["run_count"]) == (1, 1)


@pytest.mark.parametrize(("body", "status", "error"), [
    ({}, 400, "agent_path is required"),
    ({"agent_path": 5}, 400, "agent_path must be a string"),
    ({"agent_path": "nope"}, 404, "Agent not found: nope"),
])
async def test_delete_agent_body_errors(api, body, status, error):
    resp = await api.delete("/api/agents", json=body)
    assert (resp.status, await resp.json()) == (status, {"error": error})


async def test_delete_agent_invalid_json(api):
    resp = await api.delete("/api/agents", data=b"{nope")
    assert (resp.status, await resp.json()) == (400, {"error": "Invalid JSON body"})


async def test_delete_agent_refuses_paths_outside_the_colonies_folder(api, tmp_path):
    sid = await waiting_session(api)
    colony = (await spawn_colony(api, sid))["colony_path"]
    colonies = home_of(api) / "colonies"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for path in (str(outside), str(colonies), f"{colony}/data", "../agents", str(home_of(api) / "agents" / "c")):
        resp = await api.delete("/api/agents", json={"agent_path": path})
        assert resp.status == 400, path
        assert "colonies folder" in (await resp.json())["error"]
    assert outside.is_dir() and (colonies / "c" / "data" / "progress.db").is_file()


async def test_delete_agent_unloads_it_and_removes_its_storage(api):
    sid = await waiting_session(api)
    colony = (await spawn_colony(api, sid, tasks=[{"goal": "one"}]))["colony_path"]
    colony_sid = (await open_colony(api, colony))["session_id"]
    resp = await api.post(f"/api/sessions/{colony_sid}/trigger", json={})
    assert resp.status == 200
    await wait_for_event(api, colony_sid, "execution_completed")
    agents = home_of(api) / "agents" / "c"
    [worker_session] = [p.name for p in (agents / "sessions").iterdir()]
    conversations = state(api).deps.stores.conversations
    assert (await conversations.load(f"worker:c:{worker_session}")).messages
    resp = await api.delete("/api/agents", json={"agent_path": colony})
    assert (resp.status, await resp.json()) == (200, {"deleted": colony})
    assert not (home_of(api) / "colonies" / "c").exists() and not agents.exists()
    assert not (await conversations.load(f"worker:c:{worker_session}")).messages
    session = state(api).sessions.loaded(colony_sid)
    assert session is not None and session.colony is None
    _, detail = await get_json(api, f"/api/sessions/{colony_sid}")
    assert detail["has_worker"] is False
    assert json.loads((session.stored.dir / "meta.json").read_text()).get("loaded_colony") is None
    assert await get_json(api, "/api/discover") == (200, {})
    resp = await api.delete("/api/agents", json={"agent_path": colony})
    assert resp.status == 404
