"""Execution control over HTTP: trigger, inject, goal-progress, stop, pause (SPEC A 2.1-2.2, 2.5, 2.8-2.9).

Workers run on the demo model or on a ``ControlledLLM`` the test steers; colonies are written by
hand (see colony_helpers). Waits poll with a deadline; nothing asserts on durations.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from colony_helpers import (
    ControlledLLM,
    fast_client,
    history,
    of_type,
    open_colony,
    read_state,
    tasks_of,
    texts,
    trigger,
    wait_events,
    wait_until,
    worker_dir,
    write_colony,
)
from helpers import create_session

NO_COLONY = {"error": "No colony loaded in this session"}
FINAL = ("execution_completed", "execution_failed", "execution_paused")


async def _no_colony_session(client):
    return (await create_session(client))["session_id"]


# -- trigger ---------------------------------------------------------------------------------------


async def test_trigger_without_colony_is_503(make_client):
    client = await fast_client(make_client)
    sid = await _no_colony_session(client)
    resp = await client.post(f"/api/sessions/{sid}/trigger", json={})
    assert resp.status == 503
    assert await resp.json() == NO_COLONY


async def test_trigger_unknown_session_is_404(make_client):
    client = await fast_client(make_client)
    resp = await client.post("/api/sessions/session_nope/trigger", json={})
    assert resp.status == 404
    assert await resp.json() == {"error": "Session 'session_nope' not found"}


@pytest.mark.parametrize(("body", "error"), [
    ({"entry_point_id": 1}, "entry_point_id must be a string"),
    ({"input_data": []}, "input_data must be an object"),
    ({"input_data": "x"}, "input_data must be an object"),
    ({"session_state": "x"}, "session_state must be an object"),
    ({"session_state": {"resume_session_id": "../x"}}, "Invalid path parameter"),
    ({"session_state": {"resume_session_id": "a..b"}}, "Invalid path parameter"),
    ({"session_state": {"resume_from_checkpoint": "cp/1"}}, "Invalid path parameter"),
    ({"session_state": {"run_id": "a\\b"}}, "Invalid path parameter"),
    ({"session_state": {"run_id": "x" * 256}}, "Invalid path parameter"),
    ({"entry_point_id": "nope"}, "Entry point 'nope' not found"),
])
async def test_trigger_rejects_bad_bodies(make_client, home, body, error):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/trigger", json=body)
    assert resp.status == 400
    assert await resp.json() == {"error": error}
    # A request that fails validation changes nothing: no execution was started.
    assert not (home / "agents" / "c1" / "sessions").exists()
    assert not [e for e in await history(client, sid) if e["type"] == "execution_started"]


async def test_trigger_rejects_malformed_json(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/trigger", data=b"{nope")
    assert (resp.status, await resp.json()) == (400, {"error": "Invalid JSON body"})
    resp = await client.post(f"/api/sessions/{sid}/trigger", data=b"[1]")
    assert (resp.status, await resp.json()) == (400, {"error": "Request body must be a JSON object"})


async def test_trigger_runs_under_the_session_id_and_stores_input(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home, tasks=[{"goal": "alpha"}])))["session_id"]
    body = await trigger(client, sid, input_data={"topic": "bees", "n": 2})
    assert body == {"execution_id": sid}
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert done[0]["type"] == "execution_completed"
    started = [e for e in await history(client, sid) if e["type"] == "execution_started"]
    assert len(started) == 1
    assert started[0]["stream_id"] == "default"
    assert started[0]["execution_id"] == sid
    assert started[0]["data"] == {"input": {"topic": "bees", "n": 2}}
    state = read_state(home, "c1", sid)
    assert state["input_data"] == {"topic": "bees", "n": 2}
    assert state["session_id"] == sid
    assert state["status"] == "completed"


async def test_trigger_with_resume_session_id_uses_it(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    body = await trigger(client, sid, input_data={"k": "v"}, session_state={"resume_session_id": "abc"})
    assert body == {"execution_id": "abc"}
    await wait_events(client, sid, of_type(*FINAL, execution_id="abc"))
    assert read_state(home, "c1", "abc")["input_data"] == {"k": "v"}
    assert not worker_dir(home, "c1", sid).exists()


async def test_trigger_pins_the_given_run_id(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid, session_state={"run_id": "feedfacecafe"})
    await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert read_state(home, "c1", sid)["current_run_id"] == "feedfacecafe"
    runs = (worker_dir(home, "c1", sid) / "runs.jsonl").read_text().splitlines()
    assert {json.loads(line)["run_id"] for line in runs} == {"feedfacecafe"}


async def test_a_second_trigger_cancels_the_running_execution(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the first execution's model call")
    first_started = (await wait_events(client, sid, of_type("execution_started")))[0]["id"]
    await trigger(client, sid)
    events = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), count=2)
    assert events[0]["type"] == "execution_failed"
    assert events[0]["data"] == {"error": "Restarted with new execution", "cancelled": True}
    assert events[1]["type"] == "execution_completed"
    started = [e["id"] for e in await history(client, sid) if e["type"] == "execution_started"]
    assert started[0] == first_started
    assert started[0] < events[0]["id"] < started[1] < events[1]["id"]


async def test_trigger_refused_while_the_old_execution_outlives_the_grace(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0, stubborn=True)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.post(f"/api/sessions/{sid}/trigger", json={})
    assert resp.status == 409
    body = await resp.json()
    assert body["stream_id"] == "default"
    assert body["active_execution_ids"] == [sid]
    assert "already has an active execution" in body["error"]
    # Stopping it while it still winds down: 202 cancelling, and triggers stay refused (acceptance 25).
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert (resp.status, await resp.json()) == (202, {"stopped": False, "cancelling": True, "execution_id": sid})
    resp = await client.post(f"/api/sessions/{sid}/trigger", json={})
    assert resp.status == 409
    llm.release.set()
    ended = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert ended[0]["data"] == {"error": "Restarted with new execution", "cancelled": True}
    await wait_until(lambda: not _active(client, sid), what="the execution to unregister")
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert (resp.status, await resp.json()) == (404, {"stopped": False, "error": "Execution not found"})
    assert (await trigger(client, sid)) == {"execution_id": sid}
    await wait_events(client, sid, of_type("execution_completed", execution_id=sid))


def _active(client, sid):
    from apiary.server.state import APP_STATE

    session = client.server.app[APP_STATE].sessions.loaded(sid)
    return list(session.colony.active()) if session and session.colony else []


# -- queen phases around trigger ---------------------------------------------------------------------


async def test_trigger_switches_the_queen_to_working(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home), initial_phase="reviewing"))["session_id"]
    await wait_events(client, sid, of_type("client_input_requested"))
    before = (await history(client, sid))[-1]["id"]
    await trigger(client, sid)
    changed = await wait_events(client, sid, of_type("queen_phase_changed"), after=before)
    assert changed[0]["data"]["phase"] == "working"
    assert changed[0]["stream_id"] == "queen"
    meta = _queen_meta(home, sid)
    assert meta["phase"] == "working"
    # The phase change reached the queen as a [PHASE CHANGE] message naming the phase and its tools.
    note = await _queen_message(client, sid, "[PHASE CHANGE]")
    assert "WORKING" in note
    assert "Available tools: " in note and "get_worker_status" in note


async def test_trigger_while_working_publishes_no_phase_change(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home), initial_phase="working"))["session_id"]
    await wait_events(client, sid, of_type("client_input_requested"))
    before = (await history(client, sid))[-1]["id"]
    await trigger(client, sid)
    await wait_events(client, sid, of_type("execution_completed"), after=before)
    # The worker's end moves the queen to reviewing (no worker active any more) ...
    changes = await wait_events(client, sid, of_type("queen_phase_changed"), after=before)
    assert [c["data"]["phase"] for c in changes] == ["reviewing"]
    assert _queen_meta(home, sid)["phase"] == "reviewing"


async def test_worker_report_with_nothing_active_moves_the_queen_to_reviewing(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home), initial_phase="reviewing"))["session_id"]
    await wait_events(client, sid, of_type("client_input_requested"))
    before = (await history(client, sid))[-1]["id"]
    await trigger(client, sid)
    done = await wait_events(client, sid, of_type("execution_completed"), after=before)
    changes = await wait_events(client, sid, of_type("queen_phase_changed"), after=before, count=2)
    assert [c["data"]["phase"] for c in changes] == ["working", "reviewing"]
    assert changes[1]["id"] > done[0]["id"]
    report = await _queen_message(client, sid, "[WORKER REPORT]")
    assert sid in report and "completed" in report


def _queen_meta(home, sid):
    path = home / "agents" / "queens" / "queen_technology" / "sessions" / sid / "meta.json"
    return json.loads(path.read_text())


async def _queen_message(client, sid, marker):
    from apiary.server.state import APP_STATE

    session = client.server.app[APP_STATE].sessions.loaded(sid)

    async def find():
        conv = await session.deps.stores.conversations.load(f"queen:{sid}")
        found = [m["content"] for m in conv.messages if marker in str(m["content"])]
        return found[-1] if found else None

    return await wait_until(find, what=f"a queen message with {marker}")


# -- inject ----------------------------------------------------------------------------------------


async def test_inject_without_colony_is_503(make_client):
    client = await fast_client(make_client)
    sid = await _no_colony_session(client)
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "worker"})
    assert (resp.status, await resp.json()) == (503, NO_COLONY)


@pytest.mark.parametrize(("body", "error"), [
    ({}, "node_id is required"),
    ({"node_id": None}, "node_id is required"),
    ({"node_id": "  "}, "node_id is required"),
    ({"node_id": 3}, "node_id must be a string"),
    ({"node_id": "worker", "content": 1}, "content must be a string"),
    ({"node_id": "worker", "colony_id": []}, "colony_id must be a string"),
    ({"node_id": "worker", "request_id": 7}, "request_id must be a string"),
])
async def test_inject_rejects_bad_bodies(make_client, home, body, error):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/inject", json=body)
    assert (resp.status, await resp.json()) == (400, {"error": error})


async def test_inject_with_nothing_running_is_not_delivered(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "worker", "content": "hi"})
    assert (resp.status, await resp.json()) == (200, {"delivered": False})
    await trigger(client, sid)
    await wait_events(client, sid, of_type("execution_completed"))
    await wait_until(lambda: not _active(client, sid), what="the execution to end")
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "worker", "content": "late"})
    assert await resp.json() == {"delivered": False}


async def test_inject_answers_a_waiting_question(make_client, home):
    llm = ControlledLLM()
    client = await fast_client(make_client, llm)
    colony = write_colony(home, goal="demo:ask Which colour?", tools=["ask_user"])
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    worker_asks = await wait_events(client, sid, of_type("client_input_requested", stream_id="default"),
                                    what="the worker's question")
    assert worker_asks[0]["execution_id"] == sid
    assert worker_asks[0]["data"]["questions"][0]["prompt"] == "Which colour?"
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "someone", "content": "x"})
    assert await resp.json() == {"delivered": False}
    question_id = worker_asks[0]["data"]["questions"][0]["id"]
    resp = await client.post(f"/api/sessions/{sid}/inject",
                             json={"node_id": "worker", "content": "x", "request_id": "not-" + question_id})
    assert await resp.json() == {"delivered": False}
    resp = await client.post(f"/api/sessions/{sid}/inject",
                             json={"node_id": "worker", "content": "Blue please", "request_id": question_id})
    assert (resp.status, await resp.json()) == (200, {"delivered": True})
    done = await wait_events(client, sid, of_type("execution_completed", execution_id=sid))
    answered = [e for e in await history(client, sid) if e["type"] == "tool_call_completed"
                and e["data"]["tool_name"] == "ask_user"]
    assert answered[0]["data"]["result"] == "Blue please"
    assert answered[0]["id"] < done[0]["id"]
    assert any("Blue please" in t for r in llm.requests for t in texts(r))


async def test_inject_reaches_the_next_model_request_mid_turn(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "worker", "content": "Mind the bees"})
    assert await resp.json() == {"delivered": True}
    assert not any("Mind the bees" in t for r in llm.requests for t in texts(r))
    llm.release.set()
    await wait_events(client, sid, of_type("execution_completed", execution_id=sid))
    # Taken after the held response, before its tools: the very next request holds it.
    assert any("Mind the bees" in t for t in texts(llm.requests[1]))


async def test_inject_request_id_picks_the_right_escalation(make_client, home):
    colony = write_colony(home, goal="demo:escalate need help",
                          extra={"entry_points": [{"id": "second", "name": "Second"}]})
    client = await fast_client(make_client)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid, session_state={"resume_session_id": "w1"})
    first = await wait_events(client, sid, of_type("escalation_requested", execution_id="w1"))
    await trigger(client, sid, entry_point_id="second", session_state={"resume_session_id": "w2"})
    second = await wait_events(client, sid, of_type("escalation_requested", execution_id="w2"))
    rid1, rid2 = first[0]["data"]["request_id"], second[0]["data"]["request_id"]
    assert rid1 != rid2
    resp = await client.post(f"/api/sessions/{sid}/inject",
                             json={"node_id": "worker", "content": "no such", "request_id": "esc_nope"})
    assert await resp.json() == {"delivered": False}
    resp = await client.post(f"/api/sessions/{sid}/inject",
                             json={"node_id": "worker", "content": "answer for two", "request_id": rid2})
    assert await resp.json() == {"delivered": True}
    await wait_events(client, sid, of_type("execution_completed", execution_id="w2"))
    results = {e["execution_id"]: e["data"]["result"] for e in await history(client, sid)
               if e["type"] == "tool_call_completed" and e["data"]["tool_name"] == "escalate"}
    assert results == {"w2": "answer for two"}
    # Without request_id the waiting one (w1, the only one left) gets it.
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "worker", "content": "for one"})
    assert await resp.json() == {"delivered": True}
    await wait_events(client, sid, of_type("execution_completed", execution_id="w1"))


async def test_inject_without_request_id_goes_to_the_longest_waiter(make_client, home):
    colony = write_colony(home, goal="demo:escalate need help",
                          extra={"entry_points": [{"id": "second", "name": "Second"}]})
    client = await fast_client(make_client)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid, session_state={"resume_session_id": "w1"})
    await wait_events(client, sid, of_type("escalation_requested", execution_id="w1"))
    await trigger(client, sid, entry_point_id="second", session_state={"resume_session_id": "w2"})
    await wait_events(client, sid, of_type("escalation_requested", execution_id="w2"))
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "worker", "content": "first come"})
    assert await resp.json() == {"delivered": True}
    done = await wait_events(client, sid, of_type("execution_completed"))
    assert [e["execution_id"] for e in done] == ["w1"]


async def test_escalation_tells_the_queen(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home, goal="demo:escalate stuck on step 2")))["session_id"]
    await trigger(client, sid)
    esc = await wait_events(client, sid, of_type("escalation_requested", execution_id=sid))
    note = await _queen_message(client, sid, "[WORKER ESCALATION]")
    assert esc[0]["data"]["request_id"] in note
    assert "stuck on step 2" in note


# -- goal progress ----------------------------------------------------------------------------------


async def test_goal_progress_without_colony_is_503(make_client):
    client = await fast_client(make_client)
    sid = await _no_colony_session(client)
    resp = await client.get(f"/api/sessions/{sid}/goal-progress")
    assert (resp.status, await resp.json()) == (503, NO_COLONY)


async def test_goal_progress_empty_colony_is_zero(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.get(f"/api/sessions/{sid}/goal-progress")
    assert resp.status == 200
    body = await resp.json()
    assert body["progress"] == 0.0
    assert body["criteria_status"] == {}
    assert body["tasks"]["total"] == 0


async def test_goal_progress_counts_tasks_and_publishes_on_change(make_client, home):
    colony = write_colony(home, tasks=[{"goal": f"t{i}", "seq": i} for i in range(4)])
    conn = sqlite3.connect(colony / "data" / "progress.db")
    conn.execute("UPDATE tasks SET status = 'done' WHERE seq IN (0, 1)")
    conn.commit()
    conn.close()
    client = await fast_client(make_client)
    sid = (await open_colony(client, colony))["session_id"]
    body = await (await client.get(f"/api/sessions/{sid}/goal-progress")).json()
    assert body == {"progress": 0.5, "criteria_status": {},
                    "tasks": {"total": 4, "pending": 2, "claimed": 0, "in_progress": 0, "done": 2, "failed": 0}}
    before = (await history(client, sid))[-1]["id"]
    await trigger(client, sid)
    events = await wait_events(client, sid, of_type("goal_progress"), after=before)
    assert events[-1]["data"]["progress"] == 0.75
    assert events[-1]["data"]["tasks"]["done"] == 3
    body = await (await client.get(f"/api/sessions/{sid}/goal-progress")).json()
    assert body["progress"] == 0.75
    assert [t["status"] for t in tasks_of(colony)] == ["done", "done", "done", "pending"]


async def test_goal_progress_criteria_met_by_set_output(make_client, home):
    colony = write_colony(home, goal='demo:tool set_output {"key": "c1", "value": "out/report.md"}',
                          criteria=["report written", {"id": "review", "description": "reviewed"}])
    client = await fast_client(make_client)
    sid = (await open_colony(client, colony))["session_id"]
    body = await (await client.get(f"/api/sessions/{sid}/goal-progress")).json()
    assert body["progress"] == 0.0
    assert body["criteria_status"] == {"c1": {"description": "report written", "met": False, "evidence": None},
                                       "review": {"description": "reviewed", "met": False, "evidence": None}}
    await trigger(client, sid)
    events = await wait_events(client, sid, of_type("goal_progress"))
    assert events[-1]["data"]["progress"] == 0.5
    body = await (await client.get(f"/api/sessions/{sid}/goal-progress")).json()
    assert body["criteria_status"]["c1"] == {"description": "report written", "met": True,
                                             "evidence": "out/report.md"}
    assert body["criteria_status"]["review"]["met"] is False


# -- stop ------------------------------------------------------------------------------------------


async def test_stop_without_colony_is_503(make_client):
    client = await fast_client(make_client)
    sid = await _no_colony_session(client)
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert (resp.status, await resp.json()) == (503, NO_COLONY)


@pytest.mark.parametrize(("body", "error"), [
    ({}, "execution_id is required"),
    ({"execution_id": None}, "execution_id is required"),
    ({"execution_id": ""}, "execution_id is required"),
    ({"execution_id": 5}, "execution_id must be a string"),
])
async def test_stop_rejects_bad_bodies(make_client, home, body, error):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/stop", json=body)
    assert (resp.status, await resp.json()) == (400, {"error": error})


async def test_stop_unknown_or_finished_execution_is_404(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    not_found = (404, {"stopped": False, "error": "Execution not found"})
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": "nope"})
    assert (resp.status, await resp.json()) == not_found
    await trigger(client, sid)
    await wait_events(client, sid, of_type("execution_completed", execution_id=sid))
    await wait_until(lambda: not _active(client, sid), what="the execution to end")
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert (resp.status, await resp.json()) == not_found


async def test_stop_cancels_the_execution_and_nothing_of_it_follows(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    colony = write_colony(home, tasks=[{"goal": "alpha"}])
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert (resp.status, await resp.json()) == (200, {"stopped": True, "cancelling": False, "execution_id": sid})
    final = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert final[0]["type"] == "execution_failed"
    assert final[0]["data"] == {"error": "Execution stopped by user", "cancelled": True}
    state = read_state(home, "c1", sid)
    assert state["status"] == "cancelled"
    assert state["result"]["error"] == "Execution stopped by user"
    assert state["timestamps"]["completed_at"]
    # The claimed task stays claimed (not done, not failed) so the work can be resumed.
    assert tasks_of(colony)[0]["status"] in ("claimed", "in_progress")
    # The queen moves to reviewing; then let more happen on the session and check the worker stayed quiet.
    await wait_events(client, sid, of_type("queen_phase_changed"), after=final[0]["id"])
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/chat", json={"message": "anything new?"})
    after_chat = (await resp.json())["after_seq"]
    await wait_events(client, sid, of_type("llm_turn_complete", stream_id="queen"), after=after_chat)
    later = [e for e in await history(client, sid, after=final[0]["id"])
             if e["execution_id"] == sid and e["stream_id"] == "default"]
    assert later == []
    assert llm.calls == 1


async def test_stop_mid_tool_call_gives_every_call_one_result(make_client, home):
    colony = write_colony(home, goal='demo:tool run_command {"command": "sleep 30"}', tools=["run_command"])
    client = await fast_client(make_client)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    started = await wait_events(client, sid, of_type("tool_call_started", execution_id=sid))
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert resp.status == 200
    final = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    completed = [e for e in await history(client, sid) if e["type"] == "tool_call_completed"]
    assert [c["data"]["tool_use_id"] for c in completed] == [started[0]["data"]["tool_use_id"]]
    assert completed[0]["data"]["result"] == "[Tool call cancelled by user]"
    assert completed[0]["data"]["is_error"] is True
    assert completed[0]["id"] < final[0]["id"]


async def test_stop_touches_only_the_named_execution(make_client, home):
    llm = ControlledLLM(hold=lambda _n, r: "hold me" in texts(r)[0])
    colony = write_colony(home, extra={"entry_points": [{"id": "second", "name": "Second"}]})
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid, input_data={"note": "hold me"}, session_state={"resume_session_id": "w1"})
    await wait_until(llm.holding.is_set, what="w1's model call")
    await trigger(client, sid, entry_point_id="second", input_data={"note": "hold me"},
                  session_state={"resume_session_id": "w2"})
    await wait_until(lambda: llm.calls >= 2, what="w2's model call")
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": "w1"})
    assert resp.status == 200
    await wait_events(client, sid, of_type("execution_failed", execution_id="w1"))
    assert _active(client, sid) == ["w2"]
    llm.release.set()
    done = await wait_events(client, sid, of_type(*FINAL, execution_id="w2"))
    assert done[0]["type"] == "execution_completed"


async def test_stop_cancels_the_queen_turn_and_moves_her_to_reviewing(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await wait_events(client, sid, of_type("client_input_requested", stream_id="queen"))
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.post(f"/api/sessions/{sid}/chat", json={"message": "demo:delay 100\ntell me a long story"})
    after = (await resp.json())["after_seq"]
    await wait_events(client, sid, of_type("client_output_delta", stream_id="queen"), after=after)
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert resp.status == 200
    changes = await wait_events(client, sid, of_type("queen_phase_changed"), after=after)
    assert changes[0]["data"]["phase"] == "reviewing"
    truncated = await _queen_message_where(client, sid, lambda m: m["role"] == "assistant" and m.get("truncated"))
    assert truncated["content"]
    assert "tell me a long story" not in truncated["content"]   # cut before the demo reply got that far
    llm.release.set()


async def _queen_message_where(client, sid, pred):
    from apiary.server.state import APP_STATE

    session = client.server.app[APP_STATE].sessions.loaded(sid)

    async def find():
        conv = await session.deps.stores.conversations.load(f"queen:{sid}")
        found = [m for m in conv.messages if pred(m)]
        return found[-1] if found else None

    return await wait_until(find, what="a queen message")


# -- pause -----------------------------------------------------------------------------------------


async def test_pause_without_colony_is_503(make_client):
    client = await fast_client(make_client)
    sid = await _no_colony_session(client)
    resp = await client.post(f"/api/sessions/{sid}/pause")
    assert (resp.status, await resp.json()) == (503, NO_COLONY)


async def test_pause_with_nothing_running(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/pause", data=b"{not json")   # no body is read
    assert (resp.status, await resp.json()) == (200, {"stopped": False, "cancelled": [], "cancelling": [],
                                                      "timers_paused": True})


async def test_pause_keeps_the_queen_turn_and_resume_continues(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    colony = write_colony(home, tasks=[{"goal": "alpha"}])
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, colony))["session_id"]
    await wait_events(client, sid, of_type("client_input_requested", stream_id="queen"))
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.post(f"/api/sessions/{sid}/chat", json={"message": "demo:delay 50\nhow is it going?"})
    after = (await resp.json())["after_seq"]
    await wait_events(client, sid, of_type("client_output_delta", stream_id="queen"), after=after)
    resp = await client.post(f"/api/sessions/{sid}/pause", json={"execution_id": sid})
    assert (resp.status, await resp.json()) == (200, {"stopped": True, "cancelled": [sid], "cancelling": [],
                                                      "timers_paused": True})
    paused = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert paused[0]["type"] == "execution_paused"
    assert paused[0]["data"] == {"reason": "Execution paused by user"}
    state = read_state(home, "c1", sid)
    assert state["status"] == "paused"
    assert state["progress"]["paused_at"]
    assert state["timestamps"]["paused_at_time"]
    assert tasks_of(colony)[0]["status"] in ("claimed", "in_progress")
    # The queen finished the turn she was in (not cancelled), and is now reviewing.
    turn = await wait_events(client, sid, of_type("llm_turn_complete", stream_id="queen"), after=after)
    assert turn[0]["data"]["stop_reason"] == "end_turn"
    changes = await wait_events(client, sid, of_type("queen_phase_changed"), after=after)
    assert changes[0]["data"]["phase"] == "reviewing"
    session = await (await client.get(f"/api/sessions/{sid}")).json()
    assert session["queen_phase"] == "reviewing"
    replies = await _queen_messages(client, sid)
    reply = [m for m in replies if m["role"] == "assistant" and "how is it going" in m["content"]]
    assert reply and not reply[0].get("truncated")
    # Resume from the latest checkpoint continues the work to the end (acceptance 26).
    listed = await (await client.get(f"/api/sessions/{sid}/worker-sessions/{sid}/checkpoints")).json()
    latest = listed["latest_checkpoint_id"]
    assert latest == listed["checkpoints"][-1]["checkpoint_id"] == state["latest_checkpoint_id"]
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": latest})
    assert (resp.status, await resp.json()) == (200, {"execution_id": sid, "resumed_from": sid,
                                                      "checkpoint_id": latest})
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=paused[0]["id"])
    assert done[0]["type"] == "execution_completed"
    assert tasks_of(colony)[0]["status"] == "done"
    assert read_state(home, "c1", sid)["status"] == "completed"


async def test_pause_reports_cancelling_for_a_stubborn_execution(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0, stubborn=True)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.post(f"/api/sessions/{sid}/pause")
    assert await resp.json() == {"stopped": False, "cancelled": [], "cancelling": [sid], "timers_paused": True}
    llm.release.set()
    paused = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert paused[0]["type"] == "execution_paused"


async def _queen_messages(client, sid):
    from apiary.server.state import APP_STATE

    session = client.server.app[APP_STATE].sessions.loaded(sid)
    return (await session.deps.stores.conversations.load(f"queen:{sid}")).messages


async def test_a_stop_that_lands_while_the_execution_starts_still_ends_it(make_client, home):
    """The cancel arrives during the very first publish (execution_started): the execution still
    ends with its final event and a cancelled state.json."""
    import asyncio

    from apiary.server.state import APP_STATE

    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    runtime = client.server.app[APP_STATE].sessions.loaded(sid).colony
    await runtime.trigger("default", {}, {"resume_session_id": "early"})
    await asyncio.sleep(0)   # the task takes its first step and waits inside its first publish
    assert await runtime.cancel("early", "Execution stopped by user") == "cancelled"
    events = [e for e in await history(client, sid) if e["execution_id"] == "early"]
    assert [e["type"] for e in events] == ["execution_started", "execution_failed"]
    assert events[1]["data"] == {"error": "Execution stopped by user", "cancelled": True}
    assert read_state(home, "c1", "early")["status"] == "cancelled"


async def test_pause_reaches_a_worker_waiting_for_guidance(make_client, home):
    client = await fast_client(make_client)
    sid = (await open_colony(client, write_colony(home, goal="demo:escalate which hive?")))["session_id"]
    await trigger(client, sid)
    await wait_events(client, sid, of_type("escalation_requested", execution_id=sid))
    resp = await client.post(f"/api/sessions/{sid}/pause")
    assert (await resp.json())["cancelled"] == [sid]
    paused = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert paused[0]["type"] == "execution_paused"
    completed = [e for e in await history(client, sid) if e["type"] == "tool_call_completed"
                 and e["execution_id"] == sid]
    assert [c["data"]["tool_name"] for c in completed] == ["escalate"]
    assert completed[0]["id"] < paused[0]["id"]
    assert read_state(home, "c1", sid)["status"] == "paused"
    resp = await client.post(f"/api/sessions/{sid}/inject", json={"node_id": "worker", "content": "late"})
    assert await resp.json() == {"delivered": False}
