"""A server restarted on the same home brings live sessions back on first use (SPEC A 1.8, B 3.9,
acceptance 31 and 36): same id and phase, the conversation intact, event ids going on without gap."""

from __future__ import annotations

import asyncio

from apiary.llm.base import ModelRequest
from apiary.llm.fake import FunctionLLM, Turn
from apiary.server.state import APP_STATE
from helpers import create_session, read_sse, wait_for_event


class Recorder:
    """An llm_factory whose models answer from the request and share one request list."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    def __call__(self, spec: str) -> FunctionLLM:
        llm = FunctionLLM(lambda request: Turn(f"answer to {len(request.messages)} messages"))
        llm.requests = self.requests
        return llm


async def all_ids(api, sid: str) -> list[int]:
    return [s.id for s in await api.app[APP_STATE].deps.stores.events.read(sid)]


async def chat(api, sid: str, text: str) -> int:
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": text})
    assert resp.status == 200, await resp.text()
    after = (await resp.json())["after_seq"]
    return (await wait_for_event(api, sid, "client_input_requested", after=after))[0]["id"]


async def test_session_comes_back_with_phase_conversation_and_ids(make_client):
    first_models = Recorder()
    api = await make_client(llm_factory=first_models)
    sid = (await create_session(api, queen_name="queen_growth", initial_phase="reviewing"))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    await chat(api, sid, "my favourite colour is teal")
    before = await all_ids(api, sid)
    await api.close()

    models = Recorder()
    api = await make_client(llm_factory=models)
    # GET does not restore: the session is shown cold until something needs it live
    cold = await (await api.get(f"/api/sessions/{sid}")).json()
    assert cold["cold"] is True and cold["session_id"] == sid
    assert (await (await api.get("/api/health")).json())["sessions"] == 0

    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "what is my favourite colour?"})
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "queen"
    await wait_for_event(api, sid, "client_input_requested", after=body["after_seq"])
    detail = await (await api.get(f"/api/sessions/{sid}")).json()
    assert (detail["session_id"], detail["queen_id"], detail["queen_phase"]) == (sid, "queen_growth", "reviewing")
    assert len(models.requests) == 1
    sent = [m["content"] for m in models.requests[0].messages]
    assert any(c.endswith("my favourite colour is teal") for c in sent)
    assert sent[-1].endswith("what is my favourite colour?")
    assert [m["content"] for m in first_models.requests[-1].messages] == sent[:len(first_models.requests[-1]
                                                                                     .messages)]
    after = await all_ids(api, sid)
    assert after[: len(before)] == before
    assert after == list(range(1, len(after) + 1))        # 1..N, no gap, no repeat, across the restart
    assert body["after_seq"] > before[-1]


async def test_restored_queen_parks_and_requests_input_without_a_turn(make_client):
    api = await make_client()
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    last = (await all_ids(api, sid))[-1]
    await api.close()

    models = Recorder()
    api = await make_client(llm_factory=models)
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": str(last)})
    assert resp.status == 200
    frames = await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    resp.close()
    assert frames[-1]["_id"] > last
    assert "node_loop_iteration" not in [f["type"] for f in frames]
    assert models.requests == []
    assert await all_ids(api, sid) == list(range(1, frames[-1]["_id"] + 1))


async def test_restart_during_a_turn_keeps_the_partial_and_parks(make_client):
    api = await make_client()
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "demo:delay 100\nsay a lot of words"})
    after = (await resp.json())["after_seq"]
    await wait_for_event(api, sid, "client_output_delta", after=after)
    await api.close()      # shutdown in the middle of the turn

    models = Recorder()
    api = await make_client(llm_factory=models)
    mark = (await all_ids(api, sid))[-1]
    resp = await api.get(f"/api/sessions/{sid}/events", params={"last_event_id": str(mark)})
    await read_sse(resp, until=lambda f: f.get("type") == "client_input_requested")
    resp.close()
    assert models.requests == []
    conv = await api.app[APP_STATE].deps.stores.conversations.load(f"queen:{sid}")
    last = conv.messages[-1]
    assert last["role"] == "assistant" and last["truncated"] is True and last["content"]
    await chat(api, sid, "go on")
    assert models.requests[0].messages[-2]["truncated"] is True


async def test_ended_session_is_not_restored(make_client):
    api = await make_client()
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    await api.delete(f"/api/sessions/{sid}")
    await api.close()
    api = await make_client()
    for method, route in (("POST", "chat"), ("GET", "events"), ("POST", "cancel-queen")):
        resp = await api.request(method, f"/api/sessions/{sid}/{route}", json={"message": "hi"})
        assert (resp.status, await resp.json()) == (404, {"error": f"Session '{sid}' not found"})
    # and an ended one is still deleted without a restore
    resp = await api.delete(f"/api/sessions/{sid}")
    assert resp.status == 404


async def test_delete_of_a_not_yet_restored_session_ends_it(make_client):
    api = await make_client()
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    await api.close()
    api = await make_client()
    resp = await api.delete(f"/api/sessions/{sid}")
    assert (resp.status, await resp.json()) == (200, {"session_id": sid, "stopped": True})
    assert api.app[APP_STATE].sessions.live == {}
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "hi"})
    assert resp.status == 404


async def test_two_requests_restore_the_session_once(make_client):
    api = await make_client()
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    last = (await all_ids(api, sid))[-1]
    await api.close()
    api = await make_client()
    answers = await asyncio.gather(*(api.post(f"/api/sessions/{sid}/queen-context", json={"message": f"m{i}"})
                                     for i in range(5)))
    assert [r.status for r in answers] == [200] * 5
    await wait_for_event(api, sid, "llm_turn_complete", after=last)
    started = [s for s in await api.app[APP_STATE].deps.stores.events.read(sid, after=last)
               if s.type == "node_loop_started"]
    assert len(started) == 1
