"""Queen-session routes, queen profiles and message classification (SPEC A 3.4, 3.9)."""

from __future__ import annotations

import pytest

from helpers import create_session, wait_for_event

PROFILE_IDS = ["queen_technology", "queen_growth", "queen_product_strategy", "queen_finance_fundraising",
               "queen_legal", "queen_brand_design", "queen_talent", "queen_operations"]
VALID = ["incubating", "independent", "reviewing", "working"]


async def post(api, path: str, body=None):
    resp = await api.post(path, json=body if body is not None else {})
    return resp.status, await resp.json()


async def test_profiles_lists_the_eight_queens(api):
    resp = await api.get("/api/queen/profiles")
    body = await resp.json()
    assert resp.status == 200
    assert [q["id"] for q in body["queens"]] == PROFILE_IDS
    assert all(isinstance(q["name"], str) and q["name"] and isinstance(q["title"], str) for q in body["queens"])


async def test_queen_session_created_then_live_then_resumed(api):
    status, first = await post(api, "/api/queen/queen_growth/session")
    assert status == 200
    assert first == {**first, "queen_id": "queen_growth", "status": "created"}
    sid = first["session_id"]
    status, again = await post(api, "/api/queen/queen_growth/session")
    assert (status, again) == (200, {"session_id": sid, "queen_id": "queen_growth", "status": "live"})
    await wait_for_event(api, sid, "client_input_requested")
    await api.delete(f"/api/sessions/{sid}")
    status, resumed = await post(api, "/api/queen/queen_growth/session")
    assert (status, resumed) == (200, {"session_id": sid, "queen_id": "queen_growth", "status": "resumed"})
    live = [s["session_id"] for s in (await (await api.get("/api/sessions")).json())["sessions"]]
    assert live == [sid]


async def test_queen_session_ignores_other_queens_sessions(api):
    other = (await create_session(api, queen_name="queen_legal"))["session_id"]
    status, body = await post(api, "/api/queen/queen_talent/session", {"initial_phase": "working"})
    assert status == 200 and body["status"] == "created" and body["session_id"] != other
    detail = await (await api.get(f"/api/sessions/{body['session_id']}")).json()
    assert detail["queen_phase"] == "working"


async def test_new_always_creates(api):
    status, a = await post(api, "/api/queen/queen_legal/session/new")
    status2, b = await post(api, "/api/queen/queen_legal/session/new", {"initial_prompt": "check the NDA"})
    assert (status, status2) == (200, 200)
    assert a["status"] == b["status"] == "created"
    assert a["session_id"] != b["session_id"]
    detail = await (await api.get(f"/api/sessions/{a['session_id']}")).json()
    assert detail["queen_phase"] == "independent" and detail["queen_id"] == "queen_legal"
    [echo] = await wait_for_event(api, b["session_id"], "client_input_received")
    assert echo["data"]["content"] == "check the NDA"


async def test_select_live_resumed_and_errors(api):
    sid = (await create_session(api, queen_name="queen_operations"))["session_id"]
    assert await post(api, "/api/queen/queen_operations/session/select", {"session_id": sid}) == (
        200, {"session_id": sid, "queen_id": "queen_operations", "status": "live"})
    status, body = await post(api, "/api/queen/queen_growth/session/select", {"session_id": sid})
    assert status == 404 and isinstance(body["error"], str)
    await wait_for_event(api, sid, "client_input_requested")
    await api.delete(f"/api/sessions/{sid}")
    status, body = await post(api, "/api/queen/queen_growth/session/select", {"session_id": sid})
    assert status == 404      # a stored session of another queen
    assert await post(api, "/api/queen/queen_operations/session/select", {"session_id": sid}) == (
        200, {"session_id": sid, "queen_id": "queen_operations", "status": "resumed"})
    detail = await (await api.get(f"/api/sessions/{sid}")).json()
    assert detail["queen_phase"] == "independent" and detail["session_id"] == sid
    status, body = await post(api, "/api/queen/queen_operations/session/select", {"session_id": "never_was"})
    assert status == 404


@pytest.mark.parametrize(("path", "body", "status", "answer"), [
    ("/api/queen/queen_nope/session", {}, 404, {"error": "Queen 'queen_nope' not found"}),
    ("/api/queen/queen_nope/session/new", {}, 404, {"error": "Queen 'queen_nope' not found"}),
    ("/api/queen/queen_nope/session/select", {"session_id": "x"}, 404, {"error": "Queen 'queen_nope' not found"}),
    ("/api/queen/queen_growth/session", {"initial_phase": "sleeping"}, 400,
     {"error": "Invalid initial_phase 'sleeping'", "valid": VALID}),
    ("/api/queen/queen_growth/session/new", {"initial_phase": "x"}, 400,
     {"error": "Invalid initial_phase 'x'", "valid": VALID}),
    ("/api/queen/queen_growth/session/select", {}, 400, {"error": "session_id is required"}),
    ("/api/queen/queen_growth/session/select", {"session_id": "  "}, 400, {"error": "session_id is required"}),
    ("/api/queen/queen_growth/session/select", {"session_id": 3}, 400, {"error": "session_id must be a string"}),
    ("/api/queen/a..b/session", {}, 400, {"error": "Invalid path parameter"}),
    ("/api/queen/queen_growth/session", {"initial_prompt": 1}, 400, {"error": "initial_prompt must be a string"}),
])
async def test_queen_session_route_errors(api, path, body, status, answer):
    assert await post(api, path, body) == (status, answer)
    assert (await (await api.get("/api/sessions")).json())["sessions"] == []


async def test_classify(api):
    assert await post(api, "/api/messages/classify", {"message": "our contract and GDPR compliance"}) == (
        200, {"queen_id": "queen_legal"})
    status, body = await post(api, "/api/messages/classify", {"message": "zzz"})
    assert status == 200 and body["queen_id"] in PROFILE_IDS
    assert await post(api, "/api/messages/classify", {}) == (400, {"error": "message is required"})
    assert await post(api, "/api/messages/classify", {"message": ""}) == (400, {"error": "message is required"})
    assert await post(api, "/api/messages/classify", {"message": 5}) == (400, {"error": "message must be a string"})
