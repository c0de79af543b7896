"""Colony load/unload, the workers routes and the progress routes (SPEC A 3.2, 3.6, 3.7)."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from colony_helpers import (
    ControlledLLM,
    active_ids,
    fast_client,
    of_type,
    open_colony,
    tasks_of,
    trigger,
    wait_events,
    wait_until,
    write_colony,
)
from helpers import create_session

NO_COLONY = {"error": "No colony loaded in this session"}


# -- load and unload -----------------------------------------------------------------------------------


async def test_load_colony_into_a_session(make_client, home):
    client = await fast_client(make_client)
    colony = write_colony(home, goal="Count the bees")
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/colony", json={"agent_path": str(colony)})
    assert resp.status == 200
    body = await resp.json()
    assert body["session_id"] == sid
    assert body["colony_id"] == "c1"
    assert body["colony_name"] == "C1"
    assert body["has_worker"] is True
    assert body["agent_path"] == str(colony)
    assert body["goal"] == "Count the bees"
    assert body["node_count"] == 1
    assert body["colonies"] == ["c1"]
    assert [ep["id"] for ep in body["entry_points"]] == ["default"]
    loaded = await wait_events(client, sid, of_type("worker_colony_loaded"))
    assert loaded[0]["data"]["colony_id"] == "c1"
    # A relative path is taken inside the colonies folder.
    other = write_colony(home, "c2")
    sid2 = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid2}/colony", json={"agent_path": "c2"})
    assert resp.status == 200
    assert (await resp.json())["agent_path"] == str(other)


async def test_load_colony_errors(make_client, home, tmp_path):
    client = await fast_client(make_client)
    colony = write_colony(home)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "worker.json").write_text(json.dumps({"system_prompt": "x"}))
    sid = (await create_session(client))["session_id"]

    async def post(body, session=sid):
        resp = await client.post(f"/api/sessions/{session}/colony", json=body)
        return resp.status, await resp.json()

    assert await post({}) == (400, {"error": "agent_path is required"})
    assert await post({"agent_path": 3}) == (400, {"error": "agent_path must be a string"})
    assert await post({"agent_path": str(colony), "model": 3}) == (400, {"error": "model must be a string"})
    status, body = await post({"agent_path": str(outside)})
    assert status == 400 and "colonies" in body["error"]
    status, body = await post({"agent_path": str(home / "colonies" / ".." / "elsewhere")})
    assert status == 400
    missing = str(home / "colonies" / "nope")
    assert await post({"agent_path": missing}) == (404, {"error": f"Agent not found: {missing}"})
    (home / "colonies" / "empty").mkdir()
    status, body = await post({"agent_path": str(home / "colonies" / "empty")})
    assert status == 404 and body["error"].startswith("Agent not found")
    assert (await post({"agent_path": str(colony)}, session="session_nope"))[0] == 404
    assert (await post({"agent_path": str(colony)}))[0] == 200
    status, body = await post({"agent_path": str(colony)})
    assert status == 409 and body["colony_id"] == "c1"


async def test_unload_colony(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    client = await fast_client(make_client, llm)
    colony = write_colony(home, tasks=[{"goal": "alpha"}])
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.delete(f"/api/sessions/{sid}/colony")
    assert (resp.status, await resp.json()) == (200, {"session_id": sid, "colony_unloaded": True})
    session = await (await client.get(f"/api/sessions/{sid}")).json()
    assert session["has_worker"] is False and session["colony_id"] is None
    resp = await client.delete(f"/api/sessions/{sid}/colony")
    assert (resp.status, await resp.json()) == (409, NO_COLONY)
    resp = await client.delete("/api/sessions/session_nope/colony")
    assert resp.status == 404
    # The execution stopped at a checkpoint and stays resumable; its task is still held.
    assert tasks_of(colony)[0]["status"] in ("claimed", "in_progress")
    llm.release.set()
    resp = await client.post(f"/api/sessions/{sid}/colony", json={"agent_path": str(colony)})
    assert resp.status == 200


# -- workers -------------------------------------------------------------------------------------------


async def test_workers_without_colony(make_client):
    client = await fast_client(make_client)
    sid = (await create_session(client))["session_id"]
    assert await (await client.get(f"/api/sessions/{sid}/workers")).json() == {"workers": []}
    resp = await client.post(f"/api/sessions/{sid}/workers/stop-all")
    assert (resp.status, await resp.json()) == (200, {"stopped": [], "cancelling": []})
    resp = await client.post(f"/api/sessions/{sid}/workers/w1/stop")
    assert (resp.status, await resp.json()) == (503, NO_COLONY)
    resp = await client.get(f"/api/sessions/{sid}/workers/stream")
    frame = await _next_snapshot(resp)
    assert frame == {"workers": []}
    resp.close()


async def test_workers_list_stop_one_and_historical(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home, tasks=[{"goal": "alpha"}])))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    workers = (await (await client.get(f"/api/sessions/{sid}/workers")).json())["workers"]
    assert len(workers) == 1
    assert workers[0]["worker_id"] == sid
    assert workers[0]["task"] == "alpha"
    assert workers[0]["status"] == "running"
    assert workers[0]["result"] is None
    assert workers[0]["started_at"]
    resp = await client.post(f"/api/sessions/{sid}/workers/nope/stop")
    assert (resp.status, await resp.json()) == (404, {"error": "Worker not found"})
    resp = await client.post(f"/api/sessions/{sid}/workers/a..b/stop")
    assert (resp.status, await resp.json()) == (400, {"error": "Invalid path parameter"})
    resp = await client.post(f"/api/sessions/{sid}/workers/{sid}/stop")
    assert (resp.status, await resp.json()) == (200, {"worker_id": sid, "stopped": True})
    final = await wait_events(client, sid, of_type("execution_failed", execution_id=sid))
    assert final[0]["data"]["error"] == "Execution stopped by user"
    workers = (await (await client.get(f"/api/sessions/{sid}/workers")).json())["workers"]
    assert [w["status"] for w in workers] == ["historical"]
    result = workers[0]["result"]
    assert set(result) == {"status", "summary", "error", "tokens_used", "duration_seconds"}
    assert result["status"] == "cancelled"
    assert result["error"] == "Execution stopped by user"
    resp = await client.post(f"/api/sessions/{sid}/workers/{sid}/stop")
    assert resp.status == 404


async def test_workers_stop_one_that_outlives_the_grace(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0, stubborn=True)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    await trigger(client, sid)
    await wait_until(llm.holding.is_set, what="the model call")
    resp = await client.post(f"/api/sessions/{sid}/workers/{sid}/stop")
    assert (resp.status, await resp.json()) == (202, {"worker_id": sid, "stopped": False, "cancelling": True})
    llm.release.set()
    await wait_events(client, sid, of_type("execution_failed", execution_id=sid))


async def test_workers_stop_all(make_client, home):
    llm = ControlledLLM(hold=lambda _n, _r: True)
    colony = write_colony(home, extra={"entry_points": [{"id": "second", "name": "Second"}]})
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, colony))["session_id"]
    await trigger(client, sid, session_state={"resume_session_id": "w1"})
    await trigger(client, sid, entry_point_id="second", session_state={"resume_session_id": "w2"})
    await wait_until(lambda: llm.calls >= 2, what="both model calls")
    resp = await client.post(f"/api/sessions/{sid}/workers/stop-all")
    body = await resp.json()
    assert resp.status == 200
    assert sorted(body["stopped"]) == ["w1", "w2"] and body["cancelling"] == []
    assert active_ids(client, sid) == []
    ends = await wait_events(client, sid, of_type("execution_failed"), count=2)
    assert sorted(e["execution_id"] for e in ends) == ["w1", "w2"]
    llm.release.set()


async def test_workers_stream_sends_snapshots_on_change(make_client, home):
    llm = ControlledLLM(hold=lambda n, _r: n == 0)
    client = await fast_client(make_client, llm)
    sid = (await open_colony(client, write_colony(home)))["session_id"]
    resp = await client.get(f"/api/sessions/{sid}/workers/stream")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert await _next_snapshot(resp) == {"workers": []}
    await trigger(client, sid)
    running = await _next_snapshot(resp)
    assert [(w["worker_id"], w["status"]) for w in running["workers"]] == [(sid, "running")]
    await wait_until(llm.holding.is_set, what="the model call")
    llm.release.set()
    while True:
        snap = await _next_snapshot(resp)
        if snap["workers"] and snap["workers"][0]["status"] == "historical":
            break
    assert snap["workers"][0]["result"]["status"] == "completed"
    resp.close()


async def _next_snapshot(resp, timeout=10.0):
    """The next ``event: snapshot`` frame of a workers stream (keepalive comments skipped)."""
    async def read():
        event = data = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                assert event == "snapshot"
                return data
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), timeout)


# -- progress -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad", "a-b", "a..b", "x" * 256])
async def test_progress_rejects_bad_names(make_client, name):
    client = await fast_client(make_client)
    for kind in ("snapshot", "stream"):
        resp = await client.get(f"/api/colonies/{name}/progress/{kind}")
        assert (resp.status, await resp.json()) == (400, {"error": "Invalid path parameter"})


async def test_progress_unknown_colony_is_404(make_client):
    client = await fast_client(make_client)
    for kind in ("snapshot", "stream"):
        resp = await client.get(f"/api/colonies/nope/progress/{kind}")
        assert (resp.status, await resp.json()) == (404, {"error": "Colony 'nope' not found"})


async def test_progress_snapshot_shape_and_order(make_client, home):
    write_colony(home, tasks=[
        {"goal": "low late", "seq": 2},
        {"goal": "high", "seq": 9, "priority": 5, "steps": [{"title": "one"}, {"title": "two"}]},
        {"goal": "low early", "seq": 1},
    ])
    client = await fast_client(make_client)
    resp = await client.get("/api/colonies/c1/progress/snapshot")
    assert resp.status == 200
    body = await resp.json()
    assert body["colony_name"] == "c1"
    assert body["tasks"] == {"total": 3, "pending": 3, "claimed": 0, "in_progress": 0, "done": 0, "failed": 0}
    assert [i["goal"] for i in body["items"]] == ["high", "low early", "low late"]
    item = body["items"][0]
    assert set(item) == {"id", "goal", "status", "priority", "worker_id", "retry_count", "last_error", "created_at",
                         "updated_at", "completed_at", "steps"}
    assert item["steps"] == [{"seq": 1, "title": "one", "status": "pending"},
                             {"seq": 2, "title": "two", "status": "pending"}]
    limited = await (await client.get("/api/colonies/c1/progress/snapshot", params={"limit": "1"})).json()
    assert [i["goal"] for i in limited["items"]] == ["high"]
    assert limited["tasks"]["total"] == 3


async def test_progress_stream_sends_a_frame_per_change(make_client, home):
    colony = write_colony(home, tasks=[{"goal": "alpha"}])
    client = await fast_client(make_client)
    resp = await client.get("/api/colonies/c1/progress/stream")
    assert resp.status == 200
    first = await _next_data(resp)
    assert first["tasks"]["pending"] == 1
    conn = sqlite3.connect(colony / "data" / "progress.db")
    conn.execute("UPDATE tasks SET status = 'done'")
    conn.commit()
    conn.close()
    second = await _next_data(resp)
    assert second["tasks"]["done"] == 1 and second["tasks"]["pending"] == 0
    assert second["items"][0]["status"] == "done"
    resp.close()


async def _next_data(resp, timeout=10.0):
    async def read():
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            assert not line.startswith(("id:", "event:"))
            if line.startswith("data: "):
                return json.loads(line[6:])
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), timeout)
