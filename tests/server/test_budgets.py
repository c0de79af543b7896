"""Hard budgets: checked before every model call, warned at 80 %, exhausted at 100 %, visible over HTTP."""

from __future__ import annotations

from helpers import create_session, wait_for_event


async def test_session_token_budget_parks_the_queen_and_says_why(make_client):
    api = await make_client(budgets={"session_tokens": 9000})
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    for i in range(40):
        resp = await api.post(f"/api/sessions/{sid}/chat", json={"message": f"message {i} " + "words " * 200})
        after = (await resp.json())["after_seq"]
        await wait_for_event(api, sid, "client_input_requested", after=after)
        usage = await (await api.get(f"/api/sessions/{sid}/usage")).json()
        if usage["session"]["exhausted"]:
            break
    assert usage["session"]["exhausted"], "the budget ran out within 40 chats"
    assert usage["session"]["tokens"] <= 9000
    warned = await wait_for_event(api, sid, "budget_warning")
    assert warned[0]["data"]["scope"] == "session"
    exhausted = await wait_for_event(api, sid, "budget_exhausted")
    assert exhausted[0]["id"] > warned[0]["id"]
    history = await (await api.get(f"/api/sessions/{sid}/events/history", params={"after": str(after)})).json()
    texts = [e["data"]["snapshot"] for e in history["events"] if e["type"] == "client_output_delta"]
    assert any("Budget exhausted" in t for t in texts)


async def test_prices_override_gives_money_usage(make_client):
    api = await make_client(budgets={"prices": {"demo": [1000.0, 2000.0]}, "session_usd": 1000.0})
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "llm_turn_complete")
    usage = await (await api.get(f"/api/sessions/{sid}/usage")).json()
    assert usage["session"]["usd"] > 0
    turn = (await wait_for_event(api, sid, "llm_turn_complete"))[0]["data"]
    assert turn["cost_usd"] > 0


async def test_colony_budget_stops_workers_cleanly(make_client, home):
    api = await make_client(budgets={"colony_tokens": 10})
    sid = (await create_session(api))["session_id"]
    await wait_for_event(api, sid, "client_input_requested")
    spawn = await (await api.post(f"/api/sessions/{sid}/colony-spawn",
                                  json={"colony_name": "tight", "tasks": [{"goal": "one"}]})).json()
    cid = (await create_session(api, agent_path=spawn["colony_path"]))["session_id"]
    await api.post(f"/api/sessions/{cid}/trigger", json={})
    failed = await wait_for_event(api, cid, "execution_failed")
    assert "Budget exhausted" in failed[0]["data"]["error"]
    resurrected = await (await api.get(f"/api/sessions/{cid}/events/history")).json()
    assert not [e for e in resurrected["events"] if e["type"] == "execution_resurrected"], "budgets are final"
    snapshot = await (await api.get("/api/colonies/tight/progress/snapshot")).json()
    assert snapshot["items"][0]["status"] == "failed"
    usage = await (await api.get(f"/api/sessions/{cid}/usage")).json()
    assert usage["colony"]["limits"]["tokens"] == 10
