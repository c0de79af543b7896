"""Idle live sessions are parked and restored on first use, invisibly to clients (SPEC C.6)."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref

from helpers import wait_for_event
from webclient_helpers import get_json, open_colony, spawn_colony, state, wait_until, waiting_session

PARK = {"park_idle_s": 0.2}


async def events_of(client, sid: str) -> list[dict]:
    return (await get_json(client, f"/api/sessions/{sid}/events/history", limit="10000", after="0"))[1]["events"]


async def conversation(client, sid: str) -> list[dict]:
    return (await state(client).deps.stores.conversations.load(f"queen:{sid}")).messages


def parked(client, sid: str) -> bool:
    manager = state(client).sessions
    return sid not in manager.live and sid in manager.parking.records


async def test_an_idle_session_is_parked_and_restored_with_its_conversation_and_event_ids(make_client):
    client = await make_client(sessions=PARK)
    manager = state(client).sessions
    sid = await waiting_session(client)
    resp = await client.post(f"/api/sessions/{sid}/chat", json={"message": "remember the number 42"})
    await wait_for_event(client, sid, "client_input_requested", after=(await resp.json())["after_seq"])
    before_events, before_messages = await events_of(client, sid), await conversation(client, sid)
    _, listed_before = await get_json(client, "/api/sessions")
    session = manager.live[sid]
    assert session.queen.task is not None
    task_ref, session_ref = weakref.ref(session.queen.task), weakref.ref(session)
    del session

    await wait_until(lambda: parked(client, sid), timeout=5, what="the session to be parked")
    await wait_until(lambda: task_ref() is None or task_ref().done(), timeout=5, what="the queen's task to end")
    gc.collect()
    assert task_ref() is None                         # the queen's task ended and was dropped
    assert session_ref() is None                      # the Session object left memory
    meta = json.loads((manager.stored(sid).dir / "meta.json").read_text())
    assert "ended_at" not in meta

    # Invisible: listed as live, counted as live, shown live in the history.
    _, listed = await get_json(client, "/api/sessions")
    [item] = listed["sessions"]
    assert {k: v for k, v in item.items() if k != "uptime_seconds"} == \
        {k: v for k, v in listed_before["sessions"][0].items() if k != "uptime_seconds"}
    assert (await get_json(client, "/api/health"))[1]["sessions"] == 1
    [entry] = (await get_json(client, "/api/sessions/history"))[1]["sessions"]
    assert (entry["live"], entry["cold"]) == (True, False)
    assert await events_of(client, sid) == before_events   # reading the history does not restore it
    assert parked(client, sid)

    # First use restores it: same conversation, event ids go on from where they were.
    resp = await client.post(f"/api/sessions/{sid}/chat", json={"message": "what was the number?"})
    body = await resp.json()
    assert (resp.status, body["status"], body["delivered"]) == (200, "queen", True)
    assert sid in manager.live and sid not in manager.parking.records
    assert body["after_seq"] > before_events[-1]["id"]
    await wait_for_event(client, sid, "client_input_requested", after=body["after_seq"])
    after_events = await events_of(client, sid)
    assert after_events[:len(before_events)] == before_events
    ids = [e.id for e in await state(client).deps.stores.events.read(sid)]
    assert ids == list(range(1, len(ids) + 1))       # the log goes on without a gap or a reused id
    messages = await conversation(client, sid)
    assert messages[:len(before_messages)] == before_messages
    assert "what was the number?" in messages[-2]["content"] and messages[-1]["role"] == "assistant"
    assert manager.live[sid].loaded_at == listed_before["sessions"][0]["loaded_at"]


async def test_sessions_in_use_are_not_parked(make_client):
    client = await make_client(sessions=PARK)
    sid = await waiting_session(client)
    stream = await client.get(f"/api/sessions/{sid}/events")
    await asyncio.sleep(0.8)
    assert sid in state(client).sessions.live     # an open stream keeps it in memory
    stream.close()
    await wait_until(lambda: parked(client, sid), timeout=5, what="parking after the stream closed")


async def test_a_parked_session_answers_every_route_as_a_live_one(make_client):
    client = await make_client(sessions=PARK)
    sid = await waiting_session(client, queen_name="queen_growth")
    await wait_until(lambda: parked(client, sid), timeout=5, what="parking")
    resp = await client.post("/api/queen/queen_growth/session", json={})
    assert (await resp.json()) == {"session_id": sid, "queen_id": "queen_growth", "status": "live"}
    resp = await client.post("/api/sessions", json={"queen_resume_from": sid})
    assert (resp.status, await resp.json()) == (409, {"error": f"Session '{sid}' already exists"})
    status, detail = await get_json(client, f"/api/sessions/{sid}")
    assert status == 200 and detail["session_id"] == sid and "cold" not in detail
    await wait_until(lambda: parked(client, sid), timeout=5, what="parking again")
    resp = await client.delete(f"/api/sessions/{sid}")
    assert (resp.status, await resp.json()) == (200, {"session_id": sid, "stopped": True})
    assert (await get_json(client, "/api/sessions"))[1] == {"sessions": []}
    assert (await get_json(client, "/api/health"))[1]["sessions"] == 0
    resp = await client.post(f"/api/sessions/{sid}/chat", json={"message": "hi"})
    assert resp.status == 404


async def test_a_colony_session_is_parked_and_comes_back_with_its_colony(make_client):
    client = await make_client(sessions={"park_idle_s": 0.3})
    sid = await waiting_session(client)
    colony = (await spawn_colony(client, sid, tasks=[{"goal": "one"}]))["colony_path"]
    colony_sid = (await open_colony(client, colony))["session_id"]
    await wait_until(lambda: parked(client, colony_sid), timeout=5, what="the colony session to be parked")
    health = (await get_json(client, "/api/health"))[1]
    assert (health["sessions"], health["agents_loaded"]) == (2, 1)   # the source session and the colony's
    listed = {s["session_id"]: s for s in (await get_json(client, "/api/sessions"))[1]["sessions"]}
    assert listed[colony_sid]["has_worker"] is True and listed[colony_sid]["agent_path"] == colony
    resp = await client.post(f"/api/sessions/{colony_sid}/trigger", json={})
    assert resp.status == 200, await resp.text()
    await wait_for_event(client, colony_sid, "execution_completed")
    assert state(client).sessions.live[colony_sid].colony is not None


async def test_a_session_whose_fork_compaction_runs_is_not_parked(make_client):
    client = await make_client(sessions=PARK)
    sid = await waiting_session(client)
    session = state(client).sessions.live[sid]
    status = {"name": "colony_compaction_status", "colony_name": "c", "queen_session_id": "x"}
    await session.publish("custom", {**status, "status": "in_progress"})   # as colony-spawn announces it
    await asyncio.sleep(0.8)
    assert sid in state(client).sessions.live     # the compaction job still uses its model client
    await session.publish("custom", {**status, "status": "done"})
    del session
    await wait_until(lambda: parked(client, sid), timeout=5, what="parking after the compaction")
