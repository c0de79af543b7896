"""``tools.allow_commands = false`` removes run_command from the queen and the workers."""

from __future__ import annotations

import json

from helpers import create_session, wait_for_event


async def test_commands_can_be_switched_off(make_client, home):
    api = await make_client(tools={"allow_commands": False})
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": 'demo:tool run_command {"command": "id"}'})
    after = (await resp.json())["after_seq"]
    done = await wait_for_event(api, sid, "tool_call_completed", after=after)
    assert done[0]["data"]["is_error"] is True
    assert "Unknown tool 'run_command'" in done[0]["data"]["result"]
    colony = home / "colonies" / "quiet"
    colony.mkdir(parents=True)
    (colony / "worker.json").write_text(json.dumps({"system_prompt": "w", "goal": {"description": "g"}}))
    cid = (await create_session(api, agent_path=str(colony)))["session_id"]
    from apiary.server.state import APP_STATE

    session = api.app[APP_STATE].sessions.loaded(cid)
    assert "run_command" not in session.colony.worker_tools().names()
    assert "read_file" in session.colony.worker_tools().names()


async def test_commands_are_on_by_default(api):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": 'demo:tool run_command {"command": "echo hi"}'})
    after = (await resp.json())["after_seq"]
    done = await wait_for_event(api, sid, "tool_call_completed", after=after)
    assert done[0]["data"]["is_error"] is False
    assert "hi" in done[0]["data"]["result"]
