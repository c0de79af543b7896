"""Timer entry points and queen timer triggers (SPEC B 12, acceptance 27)."""

from __future__ import annotations

import asyncio
import json

from helpers import create_session, wait_for_event


def write_colony(home, name="ticker", *, entry_interval=None, trigger_interval=None):
    colony = home / "colonies" / name
    colony.mkdir(parents=True)
    worker = {"system_prompt": "You are a worker.", "goal": {"description": "tick"}, "tools": []}
    if entry_interval is not None:
        worker["entry_points"] = [{"id": "tick", "name": "Tick", "trigger_type": "timer",
                                   "trigger_config": {"interval_minutes": entry_interval}}]
    (colony / "worker.json").write_text(json.dumps(worker))
    if trigger_interval is not None:
        (colony / "triggers.json").write_text(json.dumps([{
            "id": "nightly", "name": "Nightly", "trigger_type": "timer",
            "trigger_config": {"interval_minutes": trigger_interval}, "task": "check the queue"}]))
    return colony


async def test_queen_trigger_fires_into_queen_and_pause_holds_it(api, home):
    colony = write_colony(home, trigger_interval=0.003)   # every 0.18 s
    sid = (await create_session(api, agent_path=str(colony)))["session_id"]
    fired = await wait_for_event(api, sid, "trigger_fired")
    assert fired[0]["data"]["trigger_id"] == "nightly"
    assert fired[0]["data"]["fire_count"] >= 1
    received = await wait_for_event(api, sid, "node_loop_iteration", after=fired[0]["id"])
    assert received, "the fired trigger wakes the queen"
    resp = await api.post(f"/api/sessions/{sid}/pause")
    assert (await resp.json())["timers_paused"] is True
    last = (await (await api.get(f"/api/sessions/{sid}/events/history")).json())["events"][-1]["id"]
    await asyncio.sleep(1.0)   # five intervals: a running timer would have fired
    quiet = await (await api.get(f"/api/sessions/{sid}/events/history", params={"after": str(last)})).json()
    assert [e for e in quiet["events"] if e["type"] == "trigger_fired"] == []
    resp = await api.post(f"/api/sessions/{sid}/trigger", json={})
    assert resp.status == 200
    again = await wait_for_event(api, sid, "trigger_fired", after=last)
    assert again[0]["data"]["fire_count"] > fired[0]["data"]["fire_count"]


async def test_trigger_routes(api, home):
    colony = write_colony(home, trigger_interval=60)
    sid = (await create_session(api, agent_path=str(colony)))["session_id"]
    base = f"/api/sessions/{sid}/triggers"
    assert (await (await api.post(f"{base}/nightly/activate")).json())["status"] == "already_active"
    assert (await (await api.post(f"{base}/nightly/deactivate")).json())["status"] == "deactivated"
    assert (await (await api.post(f"{base}/nightly/deactivate")).json())["status"] == "already_inactive"
    assert (await (await api.post(f"{base}/nightly/activate")).json())["status"] == "activated"
    resp = await api.patch(f"{base}/nightly", json={"task": "new task", "trigger_config": {"cron": "*/5 * * * *"}})
    assert resp.status == 200
    assert await resp.json() == {"trigger_id": "nightly", "task": "new task",
                                 "trigger_config": {"cron": "*/5 * * * *"}}
    saved = json.loads((colony / "triggers.json").read_text())
    assert saved[0]["task"] == "new task"
    bad = await api.patch(f"{base}/nightly", json={"trigger_config": {"interval_minutes": 0}})
    assert bad.status == 400
    assert "interval_minutes" in (await bad.json())["error"]
    missing = await api.post(f"{base}/nope/activate")
    assert missing.status == 404
    assert (await missing.json())["error"] == "Trigger 'nope' not found"
    detail = await (await api.get(f"/api/sessions/{sid}")).json()
    entry = next(e for e in detail["entry_points"] if e["id"] == "nightly")
    assert entry["task"] == "new task"
    assert entry["next_fire_at"] is not None


async def test_timer_entry_point_starts_execution_until_paused(api, home):
    colony = write_colony(home, entry_interval=0.005)
    sid = (await create_session(api, agent_path=str(colony)))["session_id"]
    started = await wait_for_event(api, sid, "execution_started")
    assert started[0]["data"]["input"] == {"event": {"source": "timer", "reason": "scheduled"}}
    assert started[0]["stream_id"] == "tick"
