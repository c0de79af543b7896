"""What a restart finds and does with worker sessions (SPEC B 2.4, 3.9).

The window the e2e crash test cannot hit reliably — a tool call whose intent was recorded but whose
result was not — is prepared here by hand: a checkpoint file, the run's conversation and its
recordings, then a resume over HTTP.
"""

from __future__ import annotations

import json

from apiary.agent.tool_calls import UNKNOWN_OUTCOME
from apiary.core.messages import ToolCall, make_message
from apiary.llm.fake import FunctionLLM, Turn
from apiary.server.state import APP_STATE
from colony_helpers import (
    ControlledLLM,
    fast_client,
    history,
    of_type,
    open_colony,
    read_state,
    tasks_of,
    trigger,
    wait_events,
    wait_until,
    worker_dir,
    write_colony,
)

FINAL = ("execution_completed", "execution_failed", "execution_paused")
CP_ID = "cp_node_start_worker_20260101_000000_1"
RUN_ID = "0123456789ab"


def _closing_worker() -> FunctionLLM:
    """Set the output, then close (again in a later turn when a failed tool kept a turn from counting)."""

    def respond(request):
        last = request.messages[-1]
        if last["role"] == "tool" and str(last["content"]).startswith("Output "):
            return Turn(text="Closing.")
        return Turn(text="Recording.", tool_calls=[("set_output", {"key": "result", "value": "after crash"})])

    return FunctionLLM(respond, model="closing")


async def _prepare_crashed_call(client, home, call: ToolCall, *, with_result: bool = False):
    """A worker session ``w1`` that died while ``call`` ran: its intent is recorded, its result not."""
    stores = client.server.app[APP_STATE].deps.stores
    owner = "worker:c1:w1"
    await stores.conversations.put_meta(owner, {"system_prompt": "You are a test worker."})
    await stores.conversations.append_message(owner, make_message(0, "user", "[2026-01-01 00:00 UTC] Goal: x",
                                                                  run_id=RUN_ID))
    cursor = {"next_seq": 1, "iteration": 0, "node_id": "worker", "outputs": {}, "recent_responses": [],
              "recent_tool_fingerprints": [], "pending_input": None}
    await stores.conversations.put_cursor(owner, cursor)
    model = {"text": "Running it.", "tool_calls": [call.to_wire()],
             "finish": {"stop_reason": "tool_use", "input_tokens": 10, "output_tokens": 3}}
    await stores.recordings.put(owner, RUN_ID, 1, "model:0", model)
    await stores.recordings.put(owner, RUN_ID, 1, f"call:{call.id}", {"name": call.name, "args": call.arguments})
    if with_result:
        await stores.recordings.put(owner, RUN_ID, 1, f"tool:{call.id}", {"content": "recorded result",
                                                                          "is_error": False})
    directory = worker_dir(home, "c1", "w1")
    (directory / "checkpoints").mkdir(parents=True)
    checkpoint = {"checkpoint_id": CP_ID, "checkpoint_type": "node_start", "session_id": "w1", "run_id": RUN_ID,
                  "created_at": "2026-01-01T00:00:00+00:00", "current_node": "worker", "next_node": "worker",
                  "execution_path": ["worker"], "data_buffer": {}, "accumulated_outputs": {},
                  "metrics_snapshot": {}, "is_clean": True, "description": "node start", "loop": cursor,
                  "pending": [], "task": None, "input_data": {}}
    (directory / "checkpoints" / f"{CP_ID}.json").write_text(json.dumps(checkpoint))
    (directory / "state.json").write_text(json.dumps({"session_id": "w1", "status": "active", "input_data": {},
                                                      "entry_point": "default", "timestamps": {}}))


async def _resume_w1(client, sid):
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": "w1", "checkpoint_id": CP_ID})
    assert resp.status == 200, await resp.text()
    done = await wait_events(client, sid, of_type(*FINAL, execution_id="w1"))
    assert done[0]["type"] == "execution_completed", done[0]
    return [e for e in await history(client, sid) if e["execution_id"] == "w1" and e["type"] == "tool_call_completed"]


async def test_a_non_idempotent_call_of_unknown_outcome_is_not_run_again(make_client, home):
    client = await fast_client(make_client, _closing_worker(), colonies={"resume_stale_sessions": False})
    sid = (await open_colony(client, write_colony(home, tools=["run_command"])))["session_id"]
    await _prepare_crashed_call(client, home, ToolCall("call_a", "run_command", {"command": "echo x >> count.txt"}))
    completed = await _resume_w1(client, sid)
    first = completed[0]["data"]
    assert first["tool_use_id"] == "call_a"
    assert first["result"] == UNKNOWN_OUTCOME
    assert first["is_error"] is True
    assert not (home / "colonies" / "c1" / "workspace" / "count.txt").exists()


async def test_an_idempotent_call_of_unknown_outcome_is_run_again(make_client, home):
    client = await fast_client(make_client, _closing_worker(), colonies={"resume_stale_sessions": False})
    sid = (await open_colony(client, write_colony(home, tools=["read_file"])))["session_id"]
    (home / "colonies" / "c1" / "workspace").mkdir(parents=True, exist_ok=True)
    (home / "colonies" / "c1" / "workspace" / "notes.md").write_text("bees are busy\n")
    await _prepare_crashed_call(client, home, ToolCall("call_r", "read_file", {"path": "notes.md"}))
    completed = await _resume_w1(client, sid)
    assert completed[0]["data"]["tool_use_id"] == "call_r"
    assert "bees are busy" in completed[0]["data"]["result"]
    assert completed[0]["data"]["is_error"] is False


async def test_a_recorded_result_is_reused_not_rerun(make_client, home):
    client = await fast_client(make_client, _closing_worker(), colonies={"resume_stale_sessions": False})
    sid = (await open_colony(client, write_colony(home, tools=["run_command"])))["session_id"]
    await _prepare_crashed_call(client, home, ToolCall("call_a", "run_command", {"command": "echo x >> count.txt"}),
                                with_result=True)
    completed = await _resume_w1(client, sid)
    assert completed[0]["data"]["result"] == "recorded result"
    assert not (home / "colonies" / "c1" / "workspace" / "count.txt").exists()


async def test_shutdown_mid_execution_resumes_when_the_colony_loads_again(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    colony = write_colony(home, tasks=[{"goal": "alpha"}])
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    last = (await history(client, sid))[-1]["id"]
    await client.close()
    # A shutdown brings the execution to a checkpoint and leaves it active, as after a crash.
    assert read_state(home, "c1", sid)["status"] == "active"
    events_before = last
    llm2 = ControlledLLM()
    client = await fast_client(make_client, llm2)
    resp = await client.post("/api/sessions", json={"agent_path": str(colony), "session_id": sid})
    assert resp.status == 201
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=events_before)
    assert done[0]["type"] == "execution_completed"
    resumed = [e for e in await history(client, sid, after=events_before) if e["type"] == "execution_resumed"]
    assert len(resumed) == 1
    assert tasks_of(colony)[0]["status"] == "done"
    assert read_state(home, "c1", sid)["status"] == "completed"


async def test_only_the_newest_stale_session_is_resumed(make_client, home):
    colony = write_colony(home)
    for name, stamp in (("old", "2026-01-01T00:00:00+00:00"), ("new", "2026-01-02T00:00:00+00:00")):
        directory = worker_dir(home, "c1", name)
        (directory / "checkpoints").mkdir(parents=True)
        (directory / "state.json").write_text(json.dumps({"session_id": name, "status": "active",
                                                          "entry_point": "default", "input_data": {},
                                                          "timestamps": {"updated_at": stamp}}))
        (directory / "checkpoints" / "cp_node_start_worker_20260101_000000_1.json").write_text(json.dumps(
            {"checkpoint_id": "cp_node_start_worker_20260101_000000_1", "checkpoint_type": "node_start",
             "session_id": name, "current_node": "worker", "next_node": "worker", "is_clean": True}))
    client = await fast_client(make_client)
    sid = (await open_colony(client, colony))["session_id"]
    done = await wait_events(client, sid, of_type(*FINAL, execution_id="new"))
    assert done[0]["type"] == "execution_completed"
    old = read_state(home, "c1", "old")
    assert old["status"] == "cancelled"
    assert old["result"]["error"] == "Stale session: runtime restarted"
    assert not [e for e in await history(client, sid) if e["execution_id"] == "old"]
