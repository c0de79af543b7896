"""Worker executions end to end: demo workers on spawned colonies, failures and resurrection
(SPEC B 2.4, 7; acceptance 19, 40, 41)."""

from __future__ import annotations

import json

from apiary.core.errors import ProviderError, ProviderUnavailable
from colony_helpers import (
    ControlledLLM,
    checkpoints,
    fast_client,
    history,
    of_type,
    open_colony,
    read_state,
    tasks_of,
    trigger,
    two_step_worker,
    wait_events,
    wait_until,
    write_colony,
)
from helpers import create_session, wait_for_event

FINAL = ("execution_completed", "execution_failed", "execution_paused")


async def _spawn(client, tasks):
    queen = (await create_session(client))["session_id"]
    await wait_for_event(client, queen, "client_input_requested")
    resp = await client.post(f"/api/sessions/{queen}/colony-spawn", json={"colony_name": "hive1", "tasks": tasks})
    assert resp.status == 200, await resp.text()
    spawned = await resp.json()
    resp = await client.post("/api/sessions", json={"agent_path": spawned["colony_path"]})
    assert resp.status == 201, await resp.text()
    opened = await resp.json()
    assert opened["session_id"] == spawned["queen_session_id"]
    return spawned, opened["session_id"]


async def test_demo_worker_on_a_spawned_colony_finishes_its_task(make_client, home):
    client = await fast_client(make_client)
    spawned, sid = await _spawn(client, [{"goal": "collect nectar"}])
    body = await trigger(client, sid, input_data={"note": "go"})
    assert body == {"execution_id": sid}
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert done[0]["type"] == "execution_completed"
    assert "collect nectar" in done[0]["data"]["output"]["result"]
    from pathlib import Path

    rows = tasks_of(Path(spawned["colony_path"]))
    assert [(r["id"], r["status"]) for r in rows] == [(spawned["task_ids"][0], "done")]
    state = read_state(home, "hive1", sid)
    assert state["status"] == "completed"
    assert state["input_data"]["note"] == "go"
    report = [e for e in await history(client, sid) if e["type"] == "subagent_report"]
    assert report[-1]["data"]["task_id"] == spawned["task_ids"][0]
    assert report[-1]["data"]["status"] == "completed"


async def test_demo_fail_fails_the_execution_and_the_task(make_client, home):
    client = await fast_client(make_client)
    colony = write_colony(home, tasks=[{"goal": "demo:fail boom"}])
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert done[0]["type"] == "execution_failed"
    assert "boom" in done[0]["data"]["error"]
    row = tasks_of(colony)[0]
    assert row["status"] == "failed"
    assert "boom" in row["last_error"]
    state = read_state(home, "c1", sid)
    assert state["status"] == "failed" and "boom" in state["result"]["error"]
    # A permanent provider error is fatal: never resurrected.
    assert [e for e in await history(client, sid) if e["type"] == "execution_resurrected"] == []


async def test_a_fatal_error_is_not_retried(make_client, home):
    llm = ControlledLLM(error=lambda _n, _r: ProviderUnavailable("invalid api key for this model"))
    client = await fast_client(make_client, llm, llm={"max_retries": 1})
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert done[0]["type"] == "execution_failed"
    assert "invalid api key" in done[0]["data"]["error"]
    events = await history(client, sid)
    assert [e for e in events if e["type"] == "execution_resurrected"] == []
    # The loop's own retry of a retryable provider error still happens once (max_retries 1).
    assert llm.calls == 2


async def test_a_permanent_provider_error_is_not_retried(make_client, home):
    llm = ControlledLLM(error=lambda _n, _r: ProviderError("model refused", retryable=False))
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert done[0]["data"]["error"] == "model refused"
    assert llm.calls == 1
    assert [e for e in await history(client, sid) if e["type"] in ("execution_resurrected", "node_retry")] == []


async def test_a_transient_failure_is_resurrected_at_most_three_times(make_client, home):
    llm = ControlledLLM(error=lambda _n, _r: ProviderUnavailable("upstream overloaded, 503"))
    client = await fast_client(make_client, llm, llm={"max_retries": 1})
    sid = (await open_colony(client, write_colony(home, tasks=[{"goal": "alpha"}])))["session_id"]
    await trigger(client, sid)
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert done[0]["type"] == "execution_failed"
    events = [e for e in await history(client, sid) if e["execution_id"] == sid and e["stream_id"] == "default"]
    resurrected = [e for e in events if e["type"] == "execution_resurrected"]
    assert [e["data"]["attempt"] for e in resurrected] == [1, 2, 3]
    assert {e["data"]["max_resurrections"] for e in resurrected} == {3}
    assert all("upstream overloaded" in e["data"]["error"] for e in resurrected)
    assert all(e["data"]["resume_from"] for e in resurrected)
    assert resurrected[-1]["id"] < done[0]["id"]
    assert llm.calls == 4 * 2    # four attempts, each with one retry inside the loop
    assert tasks_of(home / "colonies" / "c1")[0]["status"] == "failed"


async def test_a_resurrected_execution_finishes(make_client, home):
    llm = ControlledLLM(two_step_worker(), error=lambda n, _r: ProviderUnavailable("blip") if n == 1 else None)
    client = await fast_client(make_client, llm, llm={"max_retries": 0})
    colony = write_colony(home, tasks=[{"goal": "alpha"}])
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    assert done[0]["type"] == "execution_completed"
    resurrected = [e for e in await history(client, sid) if e["type"] == "execution_resurrected"]
    assert len(resurrected) == 1
    # It went on from its latest checkpoint (after the plan), so the plan was not made again.
    assert resurrected[0]["data"]["resume_from"].startswith("cp_loop_iteration_")
    plans = [r for r in llm.requests if r.messages[-1]["role"] == "user" and len(r.messages) == 1]
    assert len(plans) == 1
    assert tasks_of(colony)[0]["status"] == "done"
    assert [e["kind"] for e in _task_kinds(colony)].count("done") == 1


def _task_kinds(colony):
    from colony_helpers import task_events

    return task_events(colony)


async def test_trigger_honours_resume_from_checkpoint(make_client, home):
    llm = ControlledLLM(two_step_worker(), hold=lambda n, _r: n == 1)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the second model call")
    await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": sid})
    stopped = await wait_events(client, sid, of_type(*FINAL, execution_id=sid))
    listed = (await checkpoints(client, sid, sid))["checkpoints"]
    after_plan = listed[1]["checkpoint_id"]
    run_id = read_state(home, "c1", sid)["current_run_id"]
    llm.release.set()
    calls = llm.calls
    await trigger(client, sid, session_state={"resume_from_checkpoint": after_plan})
    resumed = await wait_events(client, sid, of_type("execution_resumed"), after=stopped[0]["id"])
    assert resumed[0]["data"] == {"resumed_from": sid, "checkpoint_id": after_plan, "run_id": run_id}
    done = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=stopped[0]["id"])
    assert done[0]["type"] == "execution_completed"
    assert llm.requests[calls].messages[1]["content"] == "Planning the work."
    # An unknown checkpoint id means a fresh start under a new run.
    await wait_until(lambda: not _busy(client, sid), what="the execution to end")
    await trigger(client, sid, session_state={"resume_from_checkpoint": "cp_nope_1"})
    fresh = await wait_events(client, sid, of_type(*FINAL, execution_id=sid), after=done[0]["id"])
    assert fresh[0]["type"] == "execution_completed"
    assert read_state(home, "c1", sid)["current_run_id"] != run_id
    runs = [json.loads(line) for line in (home / "agents" / "c1" / "sessions" / sid / "runs.jsonl")
            .read_text().splitlines()]
    assert [r["event"] for r in runs] == ["run_started", "run_cancelled", "run_started", "run_completed",
                                          "run_started", "run_completed"]


def _busy(client, sid):
    from colony_helpers import active_ids

    return active_ids(client, sid)
