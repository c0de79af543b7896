"""Chat with the demo queen over HTTP and SSE."""

from __future__ import annotations

from helpers import create_session, read_sse, wait_for_event


async def test_new_session_greets_then_parks(api):
    session = await create_session(api)
    assert session["model"] == "demo"
    assert session["queen_id"] == "queen_technology"
    events = await wait_for_event(api, session["session_id"], "client_input_requested")
    assert events[0]["stream_id"] == "queen"


async def test_chat_streams_reply_and_parks(api):
    sid = (await create_session(api))["session_id"]
    first_park = (await wait_for_event(api, sid, "client_input_requested"))[0]["id"]
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "hello queen"})
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "queen"
    assert body["delivered"] is True
    assert body["after_seq"] > first_park
    parked = await wait_for_event(api, sid, "client_input_requested", after=body["after_seq"])
    history = await (await api.get(f"/api/sessions/{sid}/events/history", params={"after": str(body["after_seq"])}))\
        .json()
    types = [e["type"] for e in history["events"] if e["id"] <= parked[0]["id"]]
    assert "client_output_delta" in types
    assert types.index("llm_turn_complete") < len(types) - 1
    deltas = [e for e in history["events"] if e["type"] == "client_output_delta"]
    assert "demo model" in deltas[-1]["data"]["snapshot"]
    assert "hello queen" in deltas[-1]["data"]["snapshot"]


async def test_sse_frames_have_ids_and_no_event_line(api):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": "0"})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    frames = await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    ids = [f["_id"] for f in frames]
    assert ids == sorted(ids)
    assert all(f["id"] == f["_id"] for f in frames)
    resp.close()


async def test_demo_tool_directive_runs_tool(api):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": 'demo:tool read_file {"path": "x"}'})
    after = (await resp.json())["after_seq"]
    started = await wait_for_event(api, sid, "tool_call_started", after=after)
    assert started[0]["data"]["tool_input"] == {"path": "x"}
    completed = await wait_for_event(api, sid, "tool_call_completed", after=after)
    assert completed[0]["data"]["tool_use_id"] == started[0]["data"]["tool_use_id"]
