"""MCP tools reach the queen and the workers end to end, through the demo model's tool directive."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import create_session, wait_for_event

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


def servers_file(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mcp_servers.json").write_text(json.dumps({"servers": [
        {"name": "calc", "transport": "stdio", "command": sys.executable, "args": [SERVER, "-"]}]}))


async def test_queen_calls_an_mcp_tool(api, home):
    servers_file(home / "agents" / "queens" / "queen_technology")
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested", timeout=30)
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": 'demo:tool calc__add {"a": 2, "b": 40}'})
    after = (await resp.json())["after_seq"]
    done = await wait_for_event(api, sid, "tool_call_completed", after=after, timeout=30)
    assert done[0]["data"]["tool_name"] == "calc__add"
    assert done[0]["data"]["is_error"] is False
    assert "42" in done[0]["data"]["result"]


async def test_colony_allowlist_hides_mcp_tools_from_workers(api, home):
    colony = home / "colonies" / "mcpc"
    servers_file(colony)
    (colony / "tools.json").write_text(json.dumps({"enabled_mcp_tools": ["calc__echo"]}))
    (colony / "worker.json").write_text(json.dumps({"system_prompt": "w", "goal": {"description": "g"}}))
    cid = (await create_session(api, agent_path=str(colony)))["session_id"]
    from apiary.server.state import APP_STATE

    session = api.app[APP_STATE].sessions.loaded(cid)
    names = session.colony.worker_tools().names()
    assert "calc__echo" in names
    assert "calc__add" not in names
    assert "read_file" in names
