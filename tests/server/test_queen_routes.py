"""Chat, queen-context, cancel-queen and mark-colony-spawned over HTTP (SPEC A 2.3, 2.4, 2.10, 2.11)."""

from __future__ import annotations

import json
import re
from typing import ClassVar

import pytest

from apiary.llm.demo import DemoLLM
from apiary.server.state import APP_STATE
from helpers import create_session, wait_for_event

PNG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
STAMP = r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}[^\]]*\]"


class RecordingDemo(DemoLLM):
    """The demo model, keeping every request of every session in one list."""

    seen: ClassVar[list] = []

    def __init__(self) -> None:
        super().__init__(keep_requests=True)
        self.requests = RecordingDemo.seen


@pytest.fixture
def recorded():
    RecordingDemo.seen = []
    return RecordingDemo.seen


@pytest.fixture
async def rapi(make_client, recorded):
    return await make_client(llm_factory=lambda spec: RecordingDemo())


async def parked_session(api, **body) -> str:
    sid = (await create_session(api, **body))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    return sid


def session_of(api, sid):
    return api.app[APP_STATE].sessions.live[sid]


# -- chat ----------------------------------------------------------------------------------------

async def test_chat_echo_uses_display_message_and_counts_images(api):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/chat",
                          json={"message": "the real text", "display_message": "shown text", "images": [PNG]})
    body = await resp.json()
    assert (resp.status, body["status"], body["delivered"]) == (200, "queen", True)
    [echo] = await wait_for_event(api, sid, "client_input_received", after=body["after_seq"] - 1)
    assert echo["id"] == body["after_seq"]
    assert echo["data"] == {"content": "shown text", "image_count": 1}
    assert (echo["stream_id"], echo["node_id"], echo["execution_id"]) == ("queen", "queen", sid)
    await wait_for_event(api, sid, "client_input_requested", after=body["after_seq"])
    history = (await (await api.get(f"/api/sessions/{sid}/events/history",
                                    params={"after": str(body["after_seq"])})).json())["events"]
    reply = [e for e in history if e["type"] == "client_output_delta"][-1]["data"]["snapshot"]
    assert "the real text" in reply and "1 image(s)" in reply


async def test_chat_with_only_images_is_accepted(api):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"images": [PNG, PNG]})
    assert resp.status == 200
    [echo] = await wait_for_event(api, sid, "client_input_received")
    assert echo["data"] == {"content": "", "image_count": 2}


@pytest.mark.parametrize(("body", "error"), [
    ({}, "message is required"),
    ({"message": ""}, "message is required"),
    ({"message": None, "images": []}, "message is required"),
    ({"message": 3}, "message must be a string"),
    ({"message": "hi", "display_message": 1}, "display_message must be a string"),
    ({"message": "hi", "images": "x"}, "images must be a list"),
    ({"message": "hi", "images": [PNG, {"type": "text", "text": "no"}]}, "images[1] must be an image_url block"),
    ({"message": "hi", "images": [{"type": "image_url", "image_url": "flat"}]}, "images[0] must be an image_url block"),
    ({"message": "hi", "images": [7]}, "images[0] must be an image_url block"),
])
async def test_chat_validation(api, body, error):
    sid = await parked_session(api)
    before = await api.app[APP_STATE].deps.stores.events.last_id(sid)
    resp = await api.post(f"/api/sessions/{sid}/chat", json=body)
    assert (resp.status, await resp.json()) == (400, {"error": error})
    assert await api.app[APP_STATE].deps.stores.events.last_id(sid) == before


async def test_chat_unknown_session(api):
    resp = await api.post("/api/sessions/session_x/chat", json={"message": "hi"})
    assert (resp.status, await resp.json()) == (404, {"error": "Session 'session_x' not found"})


async def test_chat_revives_a_dead_queen(rapi, recorded):
    sid = await parked_session(rapi, initial_phase="reviewing")
    await session_of(rapi, sid).queen.stop()
    assert not session_of(rapi, sid).queen.is_running
    resp = await rapi.post(f"/api/sessions/{sid}/chat", json={"message": "are you there?"})
    body = await resp.json()
    assert (resp.status, body["status"], body["delivered"]) == (200, "queen_revived", True)
    [echo] = await wait_for_event(rapi, sid, "client_input_received")
    assert echo["id"] == body["after_seq"] and echo["data"]["content"] == "are you there?"
    await wait_for_event(rapi, sid, "llm_turn_complete", after=body["after_seq"])
    contents = [m["content"] for m in recorded[-1].messages]
    assert contents[0].endswith("Hello")                   # her old conversation came back
    assert contents[-1].endswith("are you there?")
    detail = await (await rapi.get(f"/api/sessions/{sid}")).json()
    assert detail["queen_phase"] == "reviewing"            # and her phase
    resp = await rapi.post(f"/api/sessions/{sid}/chat", json={"message": "again"})
    assert (await resp.json())["status"] == "queen"


# -- queen-context -------------------------------------------------------------------------------

async def test_queen_context_is_an_external_event(rapi, recorded):
    sid = await parked_session(rapi)
    mark = (await (await rapi.get(f"/api/sessions/{sid}/events/history")).json())["events"][-1]["id"]
    resp = await rapi.post(f"/api/sessions/{sid}/queen-context", json={"message": "CI is green"})
    assert (resp.status, await resp.json()) == (200, {"status": "queued", "delivered": True})
    await wait_for_event(rapi, sid, "llm_turn_complete", after=mark)
    last = recorded[-1].messages[-1]
    assert re.fullmatch(STAMP + r" \[External event\] CI is green", last["content"])
    history = (await (await rapi.get(f"/api/sessions/{sid}/events/history", params={"after": str(mark)})).json())
    assert "client_input_received" not in [e["type"] for e in history["events"]]


async def test_queen_context_revives(api):
    sid = await parked_session(api)
    await session_of(api, sid).queen.stop()
    resp = await api.post(f"/api/sessions/{sid}/queen-context", json={"message": "wake up"})
    assert (resp.status, await resp.json()) == (200, {"status": "queued_revived", "delivered": True})
    await wait_for_event(api, sid, "llm_turn_complete", count=2)


@pytest.mark.parametrize(("body", "error"), [
    ({}, "message is required"), ({"message": "   "}, "message is required"),
    ({"message": ["x"]}, "message must be a string"),
])
async def test_queen_context_validation(api, body, error):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/queen-context", json=body)
    assert (resp.status, await resp.json()) == (400, {"error": error})


# -- cancel-queen --------------------------------------------------------------------------------

async def test_cancel_queen_during_a_slow_turn(api):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/chat",
                          json={"message": "demo:delay 200\ntell me a long story about bees"})
    after = (await resp.json())["after_seq"]
    await wait_for_event(api, sid, "client_output_delta", after=after)
    resp = await api.post(f"/api/sessions/{sid}/cancel-queen")
    assert (resp.status, await resp.json()) == (200, {"cancelled": True, "turn_was_running": True})
    [parked] = await wait_for_event(api, sid, "client_input_requested", after=after)
    conv = await api.app[APP_STATE].deps.stores.conversations.load(f"queen:{sid}")
    last = conv.messages[-1]
    assert last["role"] == "assistant" and last["truncated"] is True
    events = (await (await api.get(f"/api/sessions/{sid}/events/history", params={"after": str(after)})).json())
    types = [e["type"] for e in events["events"] if e["id"] < parked["id"]]
    assert "llm_turn_complete" not in types
    deltas = [e for e in events["events"] if e["type"] == "client_output_delta"]
    assert deltas[-1]["data"]["snapshot"] == last["content"]
    # idle now: nothing to interrupt, still "cancelled"
    resp = await api.post(f"/api/sessions/{sid}/cancel-queen", data=b"not json")
    assert (resp.status, await resp.json()) == (200, {"cancelled": True, "turn_was_running": False})
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "still there?"})
    await wait_for_event(api, sid, "llm_turn_complete", after=(await resp.json())["after_seq"])


async def test_cancel_queen_when_idle_and_when_not_active(api):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/cancel-queen")
    assert (resp.status, await resp.json()) == (200, {"cancelled": True, "turn_was_running": False})
    await session_of(api, sid).queen.stop()
    resp = await api.post(f"/api/sessions/{sid}/cancel-queen")
    assert (resp.status, await resp.json()) == (404, {"cancelled": False, "error": "Queen not active"})
    resp = await api.post("/api/sessions/nope/cancel-queen")
    assert resp.status == 404


# -- mark-colony-spawned -------------------------------------------------------------------------

async def test_mark_colony_spawned_locks_chat_also_after_restart(make_client):
    api = await make_client()
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/mark-colony-spawned", json={"colony_name": "  demo  "})
    assert (resp.status, await resp.json()) == (200, {"session_id": sid, "colony_spawned": True,
                                                      "spawned_colony_name": "demo"})
    meta_path = api.app[APP_STATE].sessions.stored(sid).meta_path
    meta = json.loads(meta_path.read_text())
    assert meta["colony_spawned"] is True and meta["spawned_colony_name"] == "demo"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}.*\+00:00", meta["spawned_colony_at"])
    detail = await (await api.get(f"/api/sessions/{sid}")).json()
    assert (detail["colony_spawned"], detail["spawned_colony_name"]) == (True, "demo")
    for body in ({"message": "hi"}, None):      # the lock is checked before the body is read
        resp = await api.post(f"/api/sessions/{sid}/chat", json=body) if body else \
            await api.post(f"/api/sessions/{sid}/chat", data=b"{broken")
        locked = await resp.json()
        assert resp.status == 409
        assert locked == {**locked, "error": "session_locked", "reason": "colony_spawned",
                          "spawned_colony_name": "demo"}
        assert isinstance(locked["message"], str) and locked["message"]
    # queen-context has no lock check
    resp = await api.post(f"/api/sessions/{sid}/queen-context", json={"message": "fyi"})
    assert resp.status == 200
    # calling again replaces the name
    resp = await api.post(f"/api/sessions/{sid}/mark-colony-spawned", json={"colony_name": "other"})
    assert (await resp.json())["spawned_colony_name"] == "other"
    await api.close()

    again = await make_client()
    resp = await again.post(f"/api/sessions/{sid}/chat", json={"message": "hi after restart"})
    locked = await resp.json()
    assert resp.status == 409
    assert (locked["error"], locked["spawned_colony_name"]) == ("session_locked", "other")
    cold_or_live = await (await again.get(f"/api/sessions/{sid}")).json()
    assert cold_or_live["colony_spawned"] is True


@pytest.mark.parametrize(("body", "error"), [
    ({}, "colony_name is required"), ({"colony_name": " "}, "colony_name is required"),
    ({"colony_name": None}, "colony_name is required"), ({"colony_name": 1}, "colony_name must be a string"),
])
async def test_mark_colony_spawned_validation(api, body, error):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/mark-colony-spawned", json=body)
    assert (resp.status, await resp.json()) == (400, {"error": error})
    meta = json.loads(api.app[APP_STATE].sessions.stored(sid).meta_path.read_text())
    assert "colony_spawned" not in meta
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "not locked"})
    assert resp.status == 200


async def test_mark_colony_spawned_empty_body_is_required_error(api):
    sid = await parked_session(api)
    resp = await api.post(f"/api/sessions/{sid}/mark-colony-spawned")
    assert (resp.status, await resp.json()) == (400, {"error": "colony_name is required"})
