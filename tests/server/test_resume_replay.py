"""Resume and replay from checkpoints over HTTP (SPEC A 2.6, 2.7, 3.8; B 2.6, 3.9; acceptance 21-23)."""

from __future__ import annotations

import json

import pytest

from apiary.core.ids import LEGACY_RUN_ID
from colony_helpers import (
    ControlledLLM,
    active_ids,
    checkpoints,
    fast_client,
    history,
    of_type,
    open_colony,
    raw_events,
    read_state,
    tasks_of,
    tool_worker,
    trigger,
    two_step_worker,
    wait_events,
    wait_until,
    worker_dir,
    write_colony,
)
from helpers import create_session

FINAL = ("execution_completed", "execution_failed", "execution_paused")
NO_COLONY = {"error": "No colony loaded in this session"}


async def _stopped_run(make_client, home, llm, *, tasks=None, tools=None):
    """Open a colony, trigger, wait until ``llm`` holds a call, stop; return (client, sid, final event)."""
    client = await fast_client(make_client, llm)
    colony = write_colony(home, tasks=tasks, tools=tools)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the held model call")
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    assert resp.status == 200
    final = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    await wait_until(lambda: not active_ids(client, sid), what="the stopped execution to unregister")
    return client, sid, final[0]


async def _completed_run(make_client, home, llm, **colony):
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home, **colony)))["session_id"]
    await trigger(client, sid)
    final = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert final[0]["type"] == "execution_completed"
    await wait_until(lambda: not active_ids(client, sid), what="the execution to unregister")
    return client, sid, final[0]


def _cp_file(home, sid, cp_id):
    return json.loads((worker_dir(home, "c1", sid) / "checkpoints" / f"{cp_id}.json").read_text())


# -- checkpoint files and listings ------------------------------------------------------------------


async def test_every_execution_writes_checkpoints_and_the_index_agrees(make_client, home):
    client, sid, _ = await _completed_run(make_client, home, two_step_worker())
    listed = await checkpoints(client, sid, sid)
    types = [c["checkpoint_type"] for c in listed["checkpoints"]]
    assert types[0] == "node_start" and types[-1] == "node_complete"
    assert types.count("loop_iteration") == 2
    index = json.loads((worker_dir(home, "c1", sid) / "checkpoints" / "index.json").read_text())
    state = read_state(home, "c1", sid)
    assert index["latest_checkpoint_id"] == state["latest_checkpoint_id"] == listed["latest_checkpoint_id"]
    assert [c["checkpoint_id"] for c in index["checkpoints"]] == [c["checkpoint_id"] for c in listed["checkpoints"]]
    run_id = state["current_run_id"]
    for item in listed["checkpoints"]:
        assert set(item) >= {"checkpoint_id", "checkpoint_type", "created_at", "run_id", "current_node", "next_node",
                             "is_clean", "description"}
        assert item["run_id"] == run_id
        body = _cp_file(home, sid, item["checkpoint_id"])
        assert body["session_id"] == sid
        assert {"loop", "pending", "task", "input_data", "execution_path", "data_buffer", "accumulated_outputs",
                "metrics_snapshot"} <= set(body)
    assert listed["checkpoints"][-1]["next_node"] is None


async def test_worker_sessions_listing(make_client, home):
    client, sid, _ = await _completed_run(make_client, home, two_step_worker())
    await trigger(client, sid, session_state={"resume_session_id": "later"})
    await wait_events(client, sid, of_type(*FINAL, execution_id="later"))
    resp = await client.get(f"/api/sessions/{sid}/worker-sessions")
    assert resp.status == 200
    items = (await resp.json())["worker_sessions"]
    assert [i["worker_session_id"] for i in items] == ["later", sid]   # newest first
    first = items[1]
    assert first["status"] == "completed"
    assert first["entry_point"] == "default"
    assert first["is_resumable"] is True
    assert first["checkpoint_count"] == len((await checkpoints(client, sid, sid))["checkpoints"])
    assert first["latest_checkpoint_id"] == read_state(home, "c1", sid)["latest_checkpoint_id"]
    assert first["current_run_id"] == read_state(home, "c1", sid)["current_run_id"]
    assert first["started_at"] and first["updated_at"]


async def test_listing_routes_errors(make_client, home):
    client = await fast_client(make_client)
    plain = (await create_session(client))["session_id"]
    for path in ("worker-sessions", "worker-sessions/x/checkpoints"):
        resp = await client.get(f"/api/sessions/{plain}/{path}")
        assert (resp.status, await resp.json()) == (503, NO_COLONY)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    assert (await (await client.get(f"/api/sessions/{sid}/worker-sessions")).json()) == {"worker_sessions": []}
    resp = await client.get(f"/api/sessions/{sid}/worker-sessions/nope/checkpoints")
    assert (resp.status, await resp.json()) == (404, {"error": "Session not found"})
    resp = await client.get(f"/api/sessions/{sid}/worker-sessions/a..b/checkpoints")
    assert (resp.status, await resp.json()) == (400, {"error": "Invalid path parameter"})


async def test_every_listed_checkpoint_is_accepted_by_resume_and_replay(make_client, home):
    client, sid, _ = await _completed_run(make_client, home, two_step_worker())
    listed = [c["checkpoint_id"] for c in (await checkpoints(client, sid, sid))["checkpoints"]]
    for route in ("resume", "replay"):
        for cp_id in listed:
            after = (await history(client, sid))[-1]["id"]
            resp = await client.post(f"/api/sessions/{sid}/{route}", json={"session_id": sid, "checkpoint_id": cp_id})
            assert resp.status == 200, (route, cp_id, await resp.text())
            await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=after)
            await wait_until(lambda: not active_ids(client, sid), what="the execution to end")


# -- resume: errors in order --------------------------------------------------------------------------


async def test_resume_without_colony_is_503(make_client):
    client = await fast_client(make_client)
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": "x", "checkpoint_id": "y"})
    assert (resp.status, await resp.json()) == (503, NO_COLONY)


async def test_resume_errors_in_order(make_client, home):
    client, sid, _ = await _completed_run(make_client, home, two_step_worker())
    cp_id = (await checkpoints(client, sid, sid))["latest_checkpoint_id"]
    (worker_dir(home, "c1", "broken") / "checkpoints").mkdir(parents=True)
    (worker_dir(home, "c1", "broken") / "state.json").write_text("{not json")

    async def post(body, raw=None):
        resp = await client.post(f"/api/sessions/{sid}/resume", json=body) if raw is None else \
            await client.post(f"/api/sessions/{sid}/resume", data=raw)
        return resp.status, await resp.json()

    assert await post(None, raw=b"{x") == (400, {"error": "Invalid JSON body"})
    assert await post({}) == (400, {"error": "session_id is required"})
    assert await post({"session_id": " ", "checkpoint_id": "../x"}) == (400, {"error": "session_id is required"})
    assert await post({"session_id": 4}) == (400, {"error": "session_id must be a string"})
    assert await post({"session_id": "../x"}) == (400, {"error": "Invalid path parameter"})
    assert await post({"session_id": "nope", "checkpoint_id": "a/b"}) == (400, {"error": "Invalid path parameter"})
    assert await post({"session_id": "nope"}) == (404, {"error": "Session not found"})
    assert await post({"session_id": "nope", "checkpoint_id": cp_id}) == (404, {"error": "Session not found"})
    status, body = await post({"session_id": "broken"})
    assert status == 500 and body["error"].startswith("Failed to read session: ")
    assert (await post({"session_id": "broken", "checkpoint_id": cp_id}))[0] == 500
    assert await post({"session_id": sid}) == (400, {"error": "checkpoint_id is required; non-checkpoint resume is "
                                                          "no longer supported"})
    assert await post({"session_id": sid, "checkpoint_id": "cp_nope_1"}) == (404, {"error": "Checkpoint not found"})
    assert not active_ids(client, sid)


# -- resume: behaviour --------------------------------------------------------------------------------


async def test_resume_from_node_start_sends_exactly_the_messages_before_it(make_client, home):
    llm = ControlledLLM(two_step_worker(), hold=lambda n, _r: n == 0)
    client, sid, stopped = await _stopped_run(make_client, home, llm)
    run_id = read_state(home, "c1", sid)["current_run_id"]
    listed = (await checkpoints(client, sid, sid))["checkpoints"]
    assert [c["checkpoint_type"] for c in listed] == ["node_start", "interrupted"]
    start = listed[0]["checkpoint_id"]
    assert _cp_file(home, sid, start)["loop"]["next_seq"] == 1
    held = llm.requests[0]
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": start})
    assert (resp.status, await resp.json()) == (200, {"execution_id": sid, "resumed_from": sid, "checkpoint_id": start})
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=stopped["id"])
    assert done[0]["type"] == "execution_completed"
    first = llm.requests[1]
    assert [(m["seq"], m["role"], m["content"]) for m in first.messages] == \
        [(m["seq"], m["role"], m["content"]) for m in held.messages]
    assert len(first.messages) == 1
    # Same worker session, same run id, announced by execution_resumed right after execution_started.
    events = [e for e in await history(client, sid, after=stopped["id"]) if e["execution_id"] == sid
              and e["stream_id"] == "default"]
    assert [e["type"] for e in events[:2]] == ["execution_started", "execution_resumed"]
    assert events[1]["data"] == {"resumed_from": sid, "checkpoint_id": start, "run_id": run_id}
    assert {e.get("run_id") for e in events[2:] if e["type"] != "execution_completed"} == {run_id}
    assert read_state(home, "c1", sid)["current_run_id"] == run_id


async def test_resume_from_an_iteration_drops_what_came_after_it(make_client, home):
    llm = ControlledLLM(two_step_worker(), hold=lambda n, _r: n == 1)
    client, sid, stopped = await _stopped_run(make_client, home, llm)
    listed = (await checkpoints(client, sid, sid))["checkpoints"]
    assert [c["checkpoint_type"] for c in listed] == ["node_start", "loop_iteration", "interrupted"]
    after_first = listed[1]["checkpoint_id"]
    assert _cp_file(home, sid, after_first)["loop"]["next_seq"] == 2
    held = llm.requests[1]
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": after_first})
    assert resp.status == 200
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=stopped["id"])
    assert done[0]["type"] == "execution_completed"
    first = llm.requests[2]
    # The two messages before next_seq, then only the continue nudge the loop adds: the truncated
    # text of the stopped call is gone.
    assert [(m["seq"], m["content"]) for m in first.messages[:2]] == [(m["seq"], m["content"])
                                                                       for m in held.messages[:2]]
    assert [m["content"] for m in first.messages[2:]] == ["[Continue working on your current task.]"]
    assert not any(m.get("truncated") for m in first.messages)


async def test_resume_does_not_rerun_a_recorded_tool(make_client, home):
    # Stopped before the model said anything after the tool: the checkpoint's last model response is
    # the tool call, and it holds the tool's result.
    llm = ControlledLLM(tool_worker("echo ran >> count.txt"), hold=lambda n, _r: n == 1, hold_text="")
    client, sid, _ = await _stopped_run(make_client, home, llm, tools=["run_command"])
    count = home / "colonies" / "c1" / "workspace" / "count.txt"
    assert count.read_text().splitlines() == ["ran"]
    listed = (await checkpoints(client, sid, sid))["checkpoints"]
    interrupted = _cp_file(home, sid, listed[-1]["checkpoint_id"])
    assert interrupted["checkpoint_type"] == "interrupted"
    assert [p["name"] for p in interrupted["pending"]] == ["run_command"]
    assert interrupted["pending"][0]["result"] is not None
    llm.release.set()
    # From the checkpoint that holds the result, and from node_start (the result is in the run's recordings).
    for cp_id in (listed[-1]["checkpoint_id"], listed[0]["checkpoint_id"]):
        after = (await history(client, sid))[-1]["id"]
        resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": cp_id})
        assert resp.status == 200
        done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=after)
        assert done[0]["type"] == "execution_completed"
        await wait_until(lambda: not active_ids(client, sid), what="the execution to end")
        assert count.read_text().splitlines() == ["ran"]


async def test_resume_of_a_checkpoint_without_run_id_uses_the_legacy_run(make_client, home):
    llm = ControlledLLM(two_step_worker(), hold=lambda n, _r: n == 1)
    client, sid, stopped = await _stopped_run(make_client, home, llm)
    reference = {k: v for k, v in _cp_file(home, sid, (await checkpoints(client, sid, sid))["checkpoints"][1]
                                           ["checkpoint_id"]).items()
                 if k in ("checkpoint_type", "session_id", "created_at", "current_node", "next_node",
                          "execution_path", "data_buffer", "accumulated_outputs", "metrics_snapshot", "is_clean",
                          "description")}
    legacy_id = "cp_loop_iteration_worker_20260101_000000_900"
    path = worker_dir(home, "c1", sid) / "checkpoints" / f"{legacy_id}.json"
    path.write_text(json.dumps({"checkpoint_id": legacy_id, **reference}))
    assert legacy_id in [c["checkpoint_id"] for c in (await checkpoints(client, sid, sid))["checkpoints"]]
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": legacy_id})
    assert resp.status == 200
    resumed = await wait_events(client, sid, of_type("execution_resumed"), after=stopped["id"])
    assert resumed[0]["data"]["run_id"] == LEGACY_RUN_ID
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=stopped["id"])
    assert done[0]["type"] == "execution_completed"
    assert read_state(home, "c1", sid)["current_run_id"] == LEGACY_RUN_ID
    # It went on from the stored conversation: the plan was not made again.
    assert not any(m["content"] == "Planning the work." for m in llm.requests[-1].messages[2:])


async def test_resume_keeps_the_stored_input_and_claimed_task(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    client = await fast_client(make_client, llm)
    colony = write_colony(home, tasks=[{"goal": "alpha", "seq": 1}, {"goal": "beta", "seq": 2}])
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid, input_data={"topic": "bees"})
    await wait_until(llm.holding.is_set, what="the model call")
    await client.post(f"/api/sessions/{sid}/pause")
    paused = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    await wait_until(lambda: not active_ids(client, sid), what="the execution to end")
    cp_id = (await checkpoints(client, sid, sid))["latest_checkpoint_id"]
    assert _cp_file(home, sid, cp_id)["task"]["task_id"]
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": cp_id})
    assert resp.status == 200
    started = await wait_events(client, sid, of_type("execution_started"), after=paused[0]["id"])
    assert started[0]["data"] == {"input": {"topic": "bees"}}
    await wait_events(client, sid, of_type("execution_completed", execution_id=sid), after=paused[0]["id"])
    statuses = {t["goal"]: t["status"] for t in tasks_of(colony)}
    assert statuses == {"alpha": "done", "beta": "pending"}


async def test_resume_does_not_touch_the_queen(make_client, home):
    client, sid, _ = await _completed_run(make_client, home, two_step_worker())
    await wait_until(lambda: _phase(client, sid) == "reviewing", what="the queen to review")
    await wait_events(client, sid, of_type("client_input_requested", stream_id="queen"))
    before = (await history(client, sid))[-1]["id"]
    cp_id = (await checkpoints(client, sid, sid))["checkpoints"][0]["checkpoint_id"]
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": cp_id})
    assert resp.status == 200
    await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=before)
    changes = [e for e in await history(client, sid, after=before) if e["type"] == "queen_phase_changed"]
    # Resume switches nothing itself; the only change allowed is the automatic one at the worker's end,
    # to the phase she is already in, which publishes nothing.
    assert changes == []


def _phase(client, sid):
    from apiary.server.state import APP_STATE

    return client.server.app[APP_STATE].sessions.loaded(sid).phase


# -- replay -------------------------------------------------------------------------------------------


async def test_replay_without_colony_is_503(make_client):
    client = await fast_client(make_client)
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/replay", json={"session_id": "x", "checkpoint_id": "y"})
    assert (resp.status, await resp.json()) == (503, NO_COLONY)


async def test_replay_errors_in_order(make_client, home):
    client, sid, _ = await _completed_run(make_client, home, two_step_worker())

    async def post(body):
        resp = await client.post(f"/api/sessions/{sid}/replay", json=body)
        return resp.status, await resp.json()

    mode_error = (400, {"error": "mode must be one of: rerun, recorded"})
    assert await post({"checkpoint_id": "c", "mode": "bad"}) == (400, {"error": "session_id is required"})
    assert await post({"session_id": sid, "mode": "bad"}) == (400, {"error": "checkpoint_id is required"})
    assert await post({"session_id": sid, "checkpoint_id": "  "}) == (400, {"error": "checkpoint_id is required"})
    assert await post({"session_id": sid, "checkpoint_id": "c", "mode": "bad"}) == mode_error
    assert await post({"session_id": sid, "checkpoint_id": "c", "mode": 3}) == mode_error
    assert await post({"session_id": "../x", "checkpoint_id": "c", "mode": "bad"}) == mode_error
    assert await post({"session_id": "../x", "checkpoint_id": "c"}) == (400, {"error": "Invalid path parameter"})
    assert await post({"session_id": sid, "checkpoint_id": "a..b"}) == (400, {"error": "Invalid path parameter"})
    assert await post({"session_id": sid, "checkpoint_id": "cp_nope_1"}) == (404, {"error": "Checkpoint not found"})
    assert await post({"session_id": "nope", "checkpoint_id": "cp_nope_1"}) == (404, {"error": "Checkpoint not found"})
    assert not active_ids(client, sid)


async def test_replay_needs_no_state_file(make_client, home):
    client, sid, final = await _completed_run(make_client, home, two_step_worker())
    cp_id = (await checkpoints(client, sid, sid))["checkpoints"][0]["checkpoint_id"]
    (worker_dir(home, "c1", sid) / "state.json").write_text("{broken")
    resp = await client.post(f"/api/sessions/{sid}/replay", json={"session_id": sid, "checkpoint_id": cp_id})
    assert (resp.status, await resp.json()) == (200, {"execution_id": sid, "replayed_from": sid,
                                                      "checkpoint_id": cp_id, "mode": "rerun"})
    started = await wait_events(client, sid, of_type("execution_started"), after=final["id"])
    assert started[0]["data"] == {"input": {}}
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=final["id"])
    assert done[0]["type"] == "execution_completed"


async def test_replay_rerun_calls_the_model_again(make_client, home):
    llm = ControlledLLM(two_step_worker())
    client, sid, final = await _completed_run(make_client, home, llm)
    calls = llm.calls
    assert calls == 3
    cp_id = (await checkpoints(client, sid, sid))["checkpoints"][0]["checkpoint_id"]
    resp = await client.post(f"/api/sessions/{sid}/replay",
                             json={"session_id": sid, "checkpoint_id": cp_id, "mode": "rerun"})
    assert (await resp.json())["mode"] == "rerun"
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=final["id"])
    assert done[0]["type"] == "execution_completed"
    assert llm.calls == 2 * calls


async def test_replay_recorded_calls_nothing_and_repeats_the_events(make_client, home):
    llm = ControlledLLM(tool_worker("echo ran >> count.txt"), hold=lambda n, _r: n == 2)
    client, sid, _ = await _stopped_run(make_client, home, llm, tools=["run_command"])
    count = home / "colonies" / "c1" / "workspace" / "count.txt"
    assert count.read_text().splitlines() == ["ran"]
    start = (await checkpoints(client, sid, sid))["checkpoints"][0]["checkpoint_id"]
    calls = llm.calls
    llm.release.set()
    outcomes = []
    for _ in range(2):
        after = (await raw_events(client, sid))[-1]["id"]
        resp = await client.post(f"/api/sessions/{sid}/replay",
                                 json={"session_id": sid, "checkpoint_id": start, "mode": "recorded"})
        assert (resp.status, (await resp.json())["mode"]) == (200, "recorded")
        done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=after)
        assert done[0]["type"] == "execution_failed"
        assert done[0]["data"]["error"] == "no recorded response for step 2"
        await wait_until(lambda: not active_ids(client, sid), what="the replay to end")
        outcomes.append(_run_events(await raw_events(client, sid), sid, after))
    assert llm.calls == calls
    assert count.read_text().splitlines() == ["ran"]
    original = _run_events(await raw_events(client, sid), sid, 0)
    first_iteration = original[:original.index(("node_loop_iteration", json.dumps({"iteration": 2})))]
    replayed = outcomes[0]
    assert replayed[:len(first_iteration)] == first_iteration
    assert ("tool_call_started", ) == ("tool_call_started", ) and any(t == "tool_call_completed"
                                                                     for t, _ in first_iteration)
    assert outcomes[0] == outcomes[1]


def _run_events(events, sid, after):
    """(type, data) of one execution's loop events after ``after``, up to its final event."""
    wanted = ("node_loop_iteration", "llm_text_delta", "tool_call_started", "tool_call_completed", "llm_turn_complete",
              "execution_failed", "execution_completed")
    picked = []
    for e in events:
        if e["id"] <= after or e["execution_id"] != sid or e["stream_id"] != "default":
            continue
        if e["type"] in wanted:
            picked.append((e["type"], json.dumps(e["data"], sort_keys=True)))
        if e["type"] in FINAL:
            break
    return picked


@pytest.mark.parametrize("mode", ["rerun", "recorded"])
async def test_replay_does_not_touch_the_queen(make_client, home, mode):
    client, sid, _ = await _completed_run(make_client, home, two_step_worker())
    await wait_until(lambda: _phase(client, sid) == "reviewing", what="the queen to review")
    before = (await history(client, sid))[-1]["id"]
    cp_id = (await checkpoints(client, sid, sid))["checkpoints"][0]["checkpoint_id"]
    resp = await client.post(f"/api/sessions/{sid}/replay", json={"session_id": sid, "checkpoint_id": cp_id,
                                                                  "mode": mode})
    assert resp.status == 200
    await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=before)
    assert [e for e in await history(client, sid, after=before) if e["type"] == "queen_phase_changed"] == []


async def test_replay_recorded_leaves_the_task_queue_alone(make_client, home):
    llm = ControlledLLM(two_step_worker(), hold=lambda n, _r: n == 1)
    client, sid, stopped = await _stopped_run(make_client, home, llm, tasks=[{"goal": "alpha"}])
    colony = home / "colonies" / "c1"
    assert tasks_of(colony)[0]["status"] == "in_progress"
    listed = (await checkpoints(client, sid, sid))["checkpoints"]
    resp = await client.post(f"/api/sessions/{sid}/replay", json={"session_id": sid, "checkpoint_id":
                                                                  listed[0]["checkpoint_id"], "mode": "recorded"})
    assert resp.status == 200
    failed = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=stopped["id"])
    assert failed[0]["data"]["error"] == "no recorded response for step 2"
    await wait_until(lambda: not active_ids(client, sid), what="the replay to end")
    assert tasks_of(colony)[0]["status"] == "in_progress"
    # The paused work can still be resumed and finishes its task.
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid,
                                                                  "checkpoint_id": listed[1]["checkpoint_id"]})
    assert resp.status == 200
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=failed[0]["id"])
    assert done[0]["type"] == "execution_completed"
    assert tasks_of(colony)[0]["status"] == "done"


async def test_resume_from_a_run_that_had_ended_finishes_the_task_it_still_held(make_client, home):
    """The process died after the last turn but before the queue heard of it: the task stays held by the
    execution. Resuming from the final checkpoint runs nothing, and completes that task."""
    import sqlite3

    client, sid, _ = await _completed_run(make_client, home, ControlledLLM(), tasks=[{"goal": "alpha"}])
    colony = home / "colonies" / "c1"
    listed = await checkpoints(client, sid, sid)
    final_cp = listed["latest_checkpoint_id"]
    assert _cp_file(home, sid, final_cp)["checkpoint_type"] == "node_complete"
    held = _cp_file(home, sid, final_cp)["task"]
    with sqlite3.connect(colony / "data" / "progress.db") as conn:   # as if complete() never ran
        conn.execute("UPDATE tasks SET status = 'in_progress', completed_at = NULL WHERE id = ?", (held["task_id"],))
    last = (await history(client, sid))[-1]["id"]
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": sid, "checkpoint_id": final_cp})
    assert resp.status == 200
    await wait_events(client, sid, of_type("execution_completed", execution_id=sid), after=last)
    assert [t["status"] for t in tasks_of(colony)] == ["done"]
