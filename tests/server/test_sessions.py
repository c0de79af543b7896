"""Session routes (SPEC A 3.1, 3.2, 3.3): create, list, get (live and cold), end, history."""

from __future__ import annotations

import asyncio
import json
import re

from apiary.server.state import APP_STATE
from helpers import create_session, wait_for_event

LIVE_FIELDS = {"session_id", "colony_id", "colony_name", "has_worker", "agent_path", "description", "goal",
               "node_count", "loaded_at", "uptime_seconds", "intro_message", "queen_phase",
               "queen_supports_images", "queen_id", "queen_name", "colony_spawned", "spawned_colony_name", "model"}
COLD_FIELDS = {"session_id", "cold", "live", "has_messages", "created_at", "agent_name", "agent_path",
               "colony_spawned", "spawned_colony_name"}
HISTORY_FIELDS = {"session_id", "cold", "live", "has_messages", "created_at", "last_active_at", "agent_name",
                  "agent_path", "last_message", "message_count", "queen_id"}
SESSION_ID = re.compile(r"session_\d{8}_\d{6}_[0-9a-f]{8}")


def meta_of(api, sid: str) -> dict:
    stored = api.app[APP_STATE].sessions.stored(sid)
    return json.loads(stored.meta_path.read_text())


async def test_create_answers_201_with_every_field(api):
    body = await create_session(api)
    assert set(body) == LIVE_FIELDS
    assert SESSION_ID.fullmatch(body["session_id"])
    assert body == {**body, "colony_id": None, "colony_name": None, "has_worker": False, "agent_path": "",
                    "description": "", "goal": "", "node_count": 0, "intro_message": "",
                    "queen_phase": "independent", "queen_supports_images": True, "queen_id": "queen_technology",
                    "queen_name": "Ada", "colony_spawned": False, "spawned_colony_name": None, "model": "demo"}
    assert isinstance(body["loaded_at"], float)
    assert isinstance(body["uptime_seconds"], float) and body["uptime_seconds"] >= 0
    meta = meta_of(api, body["session_id"])
    assert meta["queen_id"] == "queen_technology" and meta["phase"] == "independent"


async def test_create_with_every_plain_field(api):
    body = await create_session(api, session_id="my_session", queen_name="queen_legal", initial_phase="working",
                                model="demo", initial_prompt="review this contract")
    assert body["session_id"] == "my_session"
    assert (body["queen_id"], body["queen_name"], body["queen_phase"]) == ("queen_legal", "Lex", "working")
    [echo] = await wait_for_event(api, "my_session", "client_input_received")
    assert echo["data"] == {"content": "review this contract", "image_count": 0}
    await wait_for_event(api, "my_session", "client_input_requested")
    history = (await (await api.get("/api/sessions/my_session/events/history")).json())["events"]
    snapshot = [e for e in history if e["type"] == "client_output_delta"][-1]["data"]["snapshot"]
    assert "review this contract" in snapshot


async def test_initial_prompt_picks_the_queen_without_queen_name(api):
    body = await create_session(api, initial_prompt="our fundraising runway and investor budget")
    assert body["queen_id"] == "queen_finance_fundraising"


async def test_create_errors(api):
    cases = [
        ({"initial_phase": "asleep"}, 400,
         {"error": "Invalid initial_phase 'asleep'", "valid": ["incubating", "independent", "reviewing", "working"]}),
        ({"queen_name": "queen_nope"}, 404, {"error": "Queen 'queen_nope' not found"}),
        ({"session_id": "a..b"}, 400, {"error": "Invalid path parameter"}),
        ({"queen_resume_from": "x/y"}, 400, {"error": "Invalid path parameter"}),
        ({"model": 7}, 400, {"error": "model must be a string"}),
    ]
    for body, status, answer in cases:
        resp = await api.post("/api/sessions", json=body)
        assert (resp.status, await resp.json()) == (status, answer), body
    resp = await api.post("/api/sessions", json={"model": "nonsense"})
    assert resp.status == 400 and "model" in (await resp.json())["error"]
    await create_session(api, session_id="taken")
    resp = await api.post("/api/sessions", json={"session_id": "taken"})
    assert (resp.status, await resp.json()) == (409, {"error": "Session 'taken' already exists"})
    assert len((await (await api.get("/api/sessions")).json())["sessions"]) == 1


async def test_list_shows_live_sessions(api):
    a = (await create_session(api))["session_id"]
    b = (await create_session(api, queen_name="queen_growth"))["session_id"]
    listed = (await (await api.get("/api/sessions")).json())["sessions"]
    assert sorted(s["session_id"] for s in listed) == sorted([a, b])
    assert all(set(s) == LIVE_FIELDS for s in listed)


async def test_get_live_then_cold_after_delete(api):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    live = await (await api.get(f"/api/sessions/{sid}")).json()
    assert set(live) >= LIVE_FIELDS and live["session_id"] == sid
    resp = await api.delete(f"/api/sessions/{sid}")
    assert (resp.status, await resp.json()) == (200, {"session_id": sid, "stopped": True})
    assert "ended_at" in meta_of(api, sid)
    resp = await api.get(f"/api/sessions/{sid}")
    cold = await resp.json()
    assert resp.status == 200
    assert set(cold) == COLD_FIELDS | {"queen_id", "restorable"}
    assert cold == {**cold, "session_id": sid, "cold": True, "live": False, "has_messages": True,
                    "colony_spawned": False, "spawned_colony_name": None, "queen_id": "queen_technology",
                    "restorable": False}
    assert isinstance(cold["created_at"], float)
    assert (await (await api.get("/api/sessions")).json())["sessions"] == []
    # an ended session stays cold: routes that need it live answer 404
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "hi"})
    assert (resp.status, await resp.json()) == (404, {"error": f"Session '{sid}' not found"})
    resp = await api.delete(f"/api/sessions/{sid}")
    assert (resp.status, await resp.json()) == (404, {"error": f"Session '{sid}' not found"})


async def test_get_and_delete_unknown_session(api):
    for method in ("GET", "DELETE"):
        resp = await api.request(method, "/api/sessions/session_nope")
        assert (resp.status, await resp.json()) == (404, {"error": "Session 'session_nope' not found"})


async def test_resume_from_reopens_an_ended_session_with_its_conversation(make_client):
    from apiary.llm.fake import FunctionLLM, Turn

    llms: list[FunctionLLM] = []

    def factory(spec: str) -> FunctionLLM:
        llms.append(FunctionLLM(lambda request: Turn(f"reply {len(request.messages)}")))
        return llms[-1]

    api = await make_client(llm_factory=factory)
    sid = (await create_session(api, initial_phase="reviewing"))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    await api.post(f"/api/sessions/{sid}/chat", json={"message": "remember the word apple"})
    await wait_for_event(api, sid, "client_input_requested", count=2)
    await api.delete(f"/api/sessions/{sid}")
    body = await create_session(api, queen_resume_from=sid)
    assert body["session_id"] == sid
    assert body["queen_phase"] == "reviewing"
    assert "ended_at" not in meta_of(api, sid)
    resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": "what was the word?"})
    assert resp.status == 200
    await wait_for_event(api, sid, "llm_turn_complete", after=(await resp.json())["after_seq"])
    sent = [m["content"] for m in llms[-1].requests[-1].messages]
    assert any("remember the word apple" in c for c in sent)
    assert sent[-1].endswith("what was the word?")


async def test_resume_from_unknown_id_starts_a_new_session_under_it(api):
    body = await create_session(api, queen_resume_from="brand_new_id")
    assert body["session_id"] == "brand_new_id"
    await wait_for_event(api, "brand_new_id", "client_input_requested")


async def test_history_lists_stored_sessions_newest_first(api):
    first = (await create_session(api))["session_id"]
    await wait_for_event(api, first, "client_input_requested")
    second = (await create_session(api, queen_name="queen_growth"))["session_id"]
    await wait_for_event(api, second, "client_input_requested")
    await api.post(f"/api/sessions/{first}/chat", json={"message": "latest words"})
    await wait_for_event(api, first, "client_input_requested", count=2)
    await api.delete(f"/api/sessions/{second}")
    items = (await (await api.get("/api/sessions/history")).json())["sessions"]
    assert [i["session_id"] for i in items] == [first, second]
    assert all(set(i) == HISTORY_FIELDS for i in items)
    by_id = {i["session_id"]: i for i in items}
    assert by_id[first] == {**by_id[first], "live": True, "cold": False, "has_messages": True,
                            "queen_id": "queen_technology"}
    assert by_id[second] == {**by_id[second], "live": False, "cold": True, "queen_id": "queen_growth"}
    assert by_id[first]["message_count"] >= 3
    assert by_id[first]["last_message"]


async def test_history_hides_colony_copies(api):
    sid = (await create_session(api))["session_id"]
    stored = api.app[APP_STATE].sessions.stored(sid)
    stored.merge_meta({"colony_fork": True, "forked_from": "other"})
    items = (await (await api.get("/api/sessions/history")).json())["sessions"]
    assert sid not in [i["session_id"] for i in items]


async def test_delete_history_removes_the_stored_session(api):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    folder = api.app[APP_STATE].sessions.stored(sid).dir
    resp = await api.delete(f"/api/sessions/history/{sid}")
    assert (resp.status, await resp.json()) == (200, {"deleted": sid})
    assert not folder.exists()
    assert (await (await api.get("/api/sessions/history")).json())["sessions"] == []
    assert (await (await api.get("/api/sessions")).json())["sessions"] == []
    resp = await api.get(f"/api/sessions/{sid}")
    assert resp.status == 404
    history = await (await api.get(f"/api/sessions/{sid}/events/history")).json()
    assert history == {"events": [], "session_id": sid, "total": 0, "returned": 0, "truncated": False,
                       "limit": 2000}
    resp = await api.delete(f"/api/sessions/history/{sid}")
    assert (resp.status, await resp.json()) == (404, {"error": f"Session '{sid}' not found"})
    resp = await api.delete("/api/sessions/history/a..b")
    assert (resp.status, await resp.json()) == (400, {"error": "Invalid path parameter"})


async def test_event_history_limit_after_and_collapsing(api):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    log = api.app[APP_STATE].deps.stores.events
    raw = await log.read(sid)
    full = await (await api.get(f"/api/sessions/{sid}/events/history")).json()
    deltas = [e for e in full["events"] if e["type"] == "client_output_delta"]
    assert len(deltas) == 1                                      # collapsed to the last snapshot
    assert deltas[0]["id"] == max(s.id for s in raw if s.type == "client_output_delta")
    assert full["total"] == len(full["events"]) == full["returned"]
    ids = [e["id"] for e in full["events"]]
    assert ids == sorted(ids)
    tail = await (await api.get(f"/api/sessions/{sid}/events/history", params={"limit": "2"})).json()
    assert [e["id"] for e in tail["events"]] == ids[-2:]
    assert tail == {**tail, "returned": 2, "truncated": True, "limit": 2, "total": full["total"]}
    after = await (await api.get(f"/api/sessions/{sid}/events/history",
                                 params={"after": str(ids[1]), "limit": "2"})).json()
    assert [e["id"] for e in after["events"]] == ids[2:4]
    assert after["truncated"] is True
    odd = await (await api.get(f"/api/sessions/{sid}/events/history", params={"limit": "many"})).json()
    assert odd["limit"] == 2000
    clamped = await (await api.get(f"/api/sessions/{sid}/events/history", params={"limit": "0"})).json()
    assert clamped["limit"] == 1
    resp = await api.get(f"/api/sessions/{sid}/events/history", params={"after": "x"})
    assert (resp.status, await resp.json()) == (400, {"error": "after must be an integer"})


async def test_concurrent_reopen_of_one_session_opens_it_once(api):
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    await api.delete(f"/api/sessions/{sid}")
    last = await api.app[APP_STATE].deps.stores.events.last_id(sid)
    manager = api.app[APP_STATE].sessions
    original_open = manager._open

    async def slow_open(*args, **kwargs):     # opening takes a while (a colony to load, a slow disk)
        await asyncio.sleep(0.05)
        return await original_open(*args, **kwargs)

    manager._open = slow_open
    answers = await asyncio.gather(*(api.post("/api/sessions", json={"queen_resume_from": sid}) for _ in range(4)),
                                   api.post("/api/queen/queen_technology/session/select", json={"session_id": sid}))
    statuses = sorted(r.status for r in answers)
    assert statuses.count(201) + statuses.count(200) >= 1
    assert set(statuses) <= {200, 201, 409}
    live = api.app[APP_STATE].sessions.live
    assert list(live) == [sid]
    await wait_for_event(api, sid, "client_input_requested", after=last)
    started = [s for s in await api.app[APP_STATE].deps.stores.events.read(sid, after=last)
               if s.type == "node_loop_started"]
    assert len(started) == 1          # one queen, not one per request
