"""The routes a Hive web client calls on every page (SPEC C.1, C.3, C.4, C.5): configuration, queen
avatars, skills and tools, credentials, prompts, task lists, the colony's tools and skills, and the
browser-bridge status."""

from __future__ import annotations

import asyncio
import json

import pytest

from apiary.sessions.phases import PHASE_TOOLS
from apiary.tools.workspace import WORKSPACE_TOOL_NAMES
from helpers import create_session
from webclient_helpers import get_json, home_of, open_colony, spawn_colony, state, waiting_session

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
QUEEN = "queen_technology"
UNKNOWN_QUEEN = (404, {"error": "Queen 'queen_nope' not found"})


async def test_profile_defaults_then_stored_values(api):
    assert await get_json(api, "/api/config/profile") == (200, {"displayName": "", "about": "", "theme": ""})
    (home_of(api) / "profile.json").write_text(json.dumps({"displayName": "Ann", "theme": "dark"}))
    assert await get_json(api, "/api/config/profile") == (200, {"displayName": "Ann", "about": "", "theme": "dark"})


async def test_profile_avatar_404_then_the_image(api):
    assert await get_json(api, "/api/config/profile/avatar") == (404, {"error": "No avatar found"})
    (home_of(api) / "avatar.png").write_bytes(PNG)
    resp = await api.get("/api/config/profile/avatar")
    assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == PNG


async def test_llm_config_of_the_demo_model(api):
    status, body = await get_json(api, "/api/config/llm")
    assert status == 200
    assert (body["provider"], body["model"], body["has_api_key"]) == ("demo", "demo", True)
    assert isinstance(body["max_tokens"], int) and body["max_tokens"] > 0
    assert isinstance(body["max_context_tokens"], int) and body["max_context_tokens"] > body["max_tokens"]
    assert body["connected_providers"] == [] and body["active_subscription"] is None
    assert body["detected_subscriptions"] == [] and body["subscriptions"] == []


async def test_llm_config_reads_the_model_and_keys_of_the_settings(make_client):
    client = await make_client(model="anthropic:claude-sonnet-4-5", openai_api_key="sk-test")
    _, body = await get_json(client, "/api/config/llm")
    assert (body["provider"], body["model"]) == ("anthropic", "claude-sonnet-4-5")
    assert body["has_api_key"] is False and body["connected_providers"] == ["openai"]


async def test_models_catalogue(api):
    status, body = await get_json(api, "/api/config/models")
    assert status == 200 and {"demo", "openai", "anthropic"} <= set(body["models"])
    assert [m["id"] for m in body["models"]["demo"]] == ["demo"]
    assert len(body["models"]["openai"]) >= 2 and len(body["models"]["anthropic"]) >= 2
    for models in body["models"].values():
        for m in models:
            assert isinstance(m["id"], str) and isinstance(m["label"], str)
            assert isinstance(m["recommended"], bool) and isinstance(m["supports_vision"], bool)
            assert isinstance(m["max_tokens"], int) and isinstance(m["max_context_tokens"], int)


async def test_queen_avatar(api):
    assert await get_json(api, f"/api/queen/{QUEEN}/avatar") == (404, {"error": "No avatar found"})
    assert await get_json(api, "/api/queen/queen_nope/avatar") == UNKNOWN_QUEEN
    assert await get_json(api, "/api/queen/a..b/avatar") == (400, {"error": "Invalid path parameter"})
    queen_dir = home_of(api) / "agents" / "queens" / QUEEN
    queen_dir.mkdir(parents=True)
    (queen_dir / "avatar.png").write_bytes(PNG)
    resp = await api.get(f"/api/queen/{QUEEN}/avatar")
    assert resp.status == 200 and await resp.read() == PNG


async def test_credential_specs_and_prompts(api):
    status, body = await get_json(api, "/api/credentials/specs")
    assert status == 200
    by_id = {s["credential_id"]: s for s in body["specs"]}
    assert by_id["openai"]["env_var"] == "OPENAI_API_KEY" and by_id["anthropic"]["env_var"] == "ANTHROPIC_API_KEY"
    for spec in body["specs"]:
        assert set(spec) == {"credential_name", "credential_id", "env_var", "description", "help_url",
                             "api_key_instructions", "tools"}
        assert spec["help_url"].startswith("https://") and isinstance(spec["tools"], list)
    assert await get_json(api, "/api/prompts") == (200, {"prompts": []})


async def test_queen_skills(api):
    assert await get_json(api, f"/api/queen/{QUEEN}/skills") == (
        200, {"queen_id": QUEEN, "all_defaults_disabled": False, "skills": []})
    skill = home_of(api) / "agents" / "queens" / QUEEN / "skills" / "triage"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: triage\ndescription: Sort bug reports\n---\nBody\n")
    _, body = await get_json(api, f"/api/queen/{QUEEN}/skills")
    assert body["skills"] == [{"name": "triage", "description": "Sort bug reports"}]
    assert await get_json(api, "/api/queen/queen_nope/skills") == UNKNOWN_QUEEN


async def test_queen_tools(api):
    status, body = await get_json(api, f"/api/queen/{QUEEN}/tools")
    assert status == 200
    assert (body["queen_id"], body["enabled_mcp_tools"], body["is_role_default"], body["stale"]) == (
        QUEEN, None, True, False)
    [server] = body["mcp_servers"]
    assert [t["name"] for t in server["tools"]] == list(WORKSPACE_TOOL_NAMES)
    assert all(t["enabled"] is True and t["description"] for t in server["tools"])
    phase_only = {n for names in PHASE_TOOLS.values() for n in names} - set(WORKSPACE_TOOL_NAMES)
    assert {t["name"] for t in body["lifecycle"]} == phase_only
    assert [t["name"] for t in body["synthetic"]] == ["ask_user"]
    queen_dir = home_of(api) / "agents" / "queens" / QUEEN
    queen_dir.mkdir(parents=True)
    (queen_dir / "tools.json").write_text(json.dumps({"enabled_mcp_tools": ["read_file"]}))
    _, body = await get_json(api, f"/api/queen/{QUEEN}/tools")
    assert body["enabled_mcp_tools"] == ["read_file"] and body["is_role_default"] is False
    enabled = {t["name"]: t["enabled"] for t in body["mcp_servers"][0]["tools"]}
    assert enabled["read_file"] is True and enabled["write_file"] is False
    assert await get_json(api, "/api/queen/queen_nope/tools") == UNKNOWN_QUEEN


@pytest.mark.parametrize("task_list_id", ["session:queen:session_20260101_000000_00000000", "colony:nope",
                                          "colony:a..b", "garbage", "session:queen:"])
async def test_task_lists_that_do_not_exist(api, task_list_id):
    assert await get_json(api, f"/api/tasks/{task_list_id}") == (
        404, {"error": f"Task list '{task_list_id}' not found", "task_list_id": task_list_id, "tasks": []})


async def test_task_lists_of_a_real_session_and_colony_are_404_until_written(api):
    sid = (await create_session(api))["session_id"]
    encoded = f"session%3Aqueen%3A{sid}"   # clients percent-encode the colons
    status, body = await get_json(api, f"/api/tasks/{encoded}")
    assert (status, body["task_list_id"], body["tasks"]) == (404, f"session:queen:{sid}", [])
    session_dir = home_of(api) / "agents" / "queens" / QUEEN / "sessions" / sid
    (session_dir / "tasks.json").write_text(json.dumps({"meta": {"role": "session"}, "tasks": [
        {"id": 1, "subject": "Write tests", "status": "in_progress", "blocks": [2]}]}))
    status, body = await get_json(api, f"/api/tasks/{encoded}")
    assert status == 200 and (body["task_list_id"], body["role"], body["meta"]) == (
        f"session:queen:{sid}", "session", {"role": "session"})
    [task] = body["tasks"]
    assert task == {"id": 1, "subject": "Write tests", "description": "", "active_form": None, "owner": None,
                    "status": "in_progress", "blocks": [2], "blocked_by": [], "metadata": {}, "created_at": None,
                    "updated_at": None}


async def test_colony_tools_and_skills_of_a_session(api):
    sid = await waiting_session(api)
    assert await get_json(api, f"/api/sessions/{sid}/colony/tools") == (200, {"tools": []})
    assert await get_json(api, f"/api/sessions/{sid}/colony/skills") == (200, {"skills": []})
    for route in ("tools", "skills"):
        assert await get_json(api, f"/api/sessions/session_nope/colony/{route}") == (
            404, {"error": "Session 'session_nope' not found"})
    spawned = await spawn_colony(api, sid)
    skill = home_of(api) / "colonies" / "c" / "skills" / "report"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: report\ndescription: Write the report\n---\n")
    colony_sid = (await open_colony(api, spawned["colony_path"]))["session_id"]
    worker_json = json.loads((home_of(api) / "colonies" / "c" / "worker.json").read_text())
    _, body = await get_json(api, f"/api/sessions/{colony_sid}/colony/tools")
    assert [t["name"] for t in body["tools"]] == [n for n in WORKSPACE_TOOL_NAMES if n in worker_json["tools"]]
    assert body["tools"] and all(set(t) == {"name", "description"} and t["description"] for t in body["tools"])
    _, body = await get_json(api, f"/api/sessions/{colony_sid}/colony/skills")
    assert body == {"skills": [{"name": "report", "description": "Write the report",
                                "location": str(skill / "SKILL.md"), "base_dir": str(skill)}]}


async def test_browser_status(api):
    assert await get_json(api, "/api/browser/status") == (200, {"bridge": False, "connected": False})


async def test_browser_status_stream_keeps_alive_and_ends_at_shutdown(make_client):
    client = await make_client(server={"keepalive_s": 0.1})
    resp = await client.get("/api/browser/status/stream")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    lines: list[bytes] = []

    async def until_keepalive() -> None:
        async for line in resp.content:
            lines.append(line)
            if line.startswith(b": keepalive"):
                return

    await asyncio.wait_for(until_keepalive(), 5)
    assert lines[0] == b"retry: 3000\n"
    await state(client).bus.close()   # the first step of shutdown: the stream ends at once
    rest = await asyncio.wait_for(resp.content.read(), 5)
    assert set(rest.split(b"\n")) <= {b"", b": keepalive"}
