"""PostgreSQL mode in one process: the API server queues executions and its embedded worker claims
them from ``apiary_executions``; checkpoints, worker sessions and the task queue live in the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from colony_helpers import FAST, history, of_type, open_colony, seed_pg_tasks, trigger, wait_events, write_colony
from helpers import create_session, wait_until

FINAL = ("execution_completed", "execution_failed", "execution_paused")


def worker_delta(execution_id: str):
    """A worker's streamed text (the queen's turns share the session's id as their execution id)."""
    return of_type("llm_text_delta", execution_id=execution_id, stream_id="default")


async def pg_client(make_client, pg_url: str, **colonies: Any):
    return await make_client(database_url=pg_url, colonies={**FAST, "worker_lease_s": 3.0, "worker_poll_s": 0.2,
                                                           **colonies})


def rows(pg_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return list(conn.execute(sql, params).fetchall())


async def test_trigger_runs_on_a_worker_and_everything_lands_in_postgres(make_client, home: Path, pg_url: str):
    client = await pg_client(make_client, pg_url)
    colony = write_colony(home, "pgc", goal="Count the bees")
    [task_id] = await seed_pg_tasks(pg_url, "pgc", ["count them"])
    sid = (await open_colony(client, colony))["session_id"]
    execution_id = (await trigger(client, sid))["execution_id"]
    [final] = await wait_events(client, sid, of_type(*FINAL, execution_id=execution_id), timeout=20,
                                what="the execution to end")
    assert final["type"] == "execution_completed", final
    # The execution row was claimed by a worker and ended (just after the final event); no progress.db.
    await wait_until(lambda: rows(pg_url, "SELECT 1 FROM apiary_executions WHERE id = %s AND status = 'ended'",
                                  execution_id), what="the row to end")
    [(status, outcome, worker, attempts)] = rows(
        pg_url, "SELECT status, outcome, worker, attempts FROM apiary_executions WHERE colony = 'pgc' AND id = %s",
        execution_id)
    assert (status, outcome, attempts) == ("ended", "completed", 1) and worker
    assert not (colony / "data" / "progress.db").exists()
    assert rows(pg_url, "SELECT status, worker_id FROM apiary_tasks WHERE colony = 'pgc'") == [("done", execution_id)]
    # Worker sessions and checkpoints are served from the database.
    listed = await (await client.get(f"/api/sessions/{sid}/worker-sessions")).json()
    [ws] = [w for w in listed["worker_sessions"] if w["worker_session_id"] == execution_id]
    assert ws["status"] == "completed" and ws["checkpoint_count"] >= 2
    cps = await (await client.get(f"/api/sessions/{sid}/worker-sessions/{execution_id}/checkpoints")).json()
    assert len(cps["checkpoints"]) == ws["checkpoint_count"]
    assert rows(pg_url, "SELECT count(*) FROM apiary_checkpoints WHERE colony = 'pgc' AND session_id = %s",
                execution_id) == [(ws["checkpoint_count"],)]
    # The report reached the queen's side: the worker is listed as finished, the queue as done.
    workers = await (await client.get(f"/api/sessions/{sid}/workers")).json()
    assert [w["worker_id"] for w in workers["workers"]] == [execution_id]
    assert workers["workers"][0]["result"]["tokens_used"] > 0   # reported by the worker
    snap = await (await client.get("/api/colonies/pgc/progress/snapshot")).json()
    assert snap["tasks"]["done"] == 1 and [i["id"] for i in snap["items"]] == [task_id]
    browse = await client.get("/api/colonies/pgc/data/tables")
    assert browse.status == 409 and "PostgreSQL" in (await browse.json())["error"]
    # Resume from a checkpoint goes through a worker too.
    first_cp = cps["checkpoints"][0]["checkpoint_id"]
    resp = await client.post(f"/api/sessions/{sid}/resume", json={"session_id": execution_id,
                                                                  "checkpoint_id": first_cp})
    assert resp.status == 200, await resp.text()
    events = await wait_events(client, sid, of_type("execution_resumed", execution_id=execution_id), timeout=20,
                               what="the resume")
    assert events[0]["data"]["checkpoint_id"] == first_cp


async def test_stop_reaches_the_worker_and_the_stream_is_free_again(make_client, home: Path, pg_url: str):
    client = await pg_client(make_client, pg_url, cancel_grace_s=1.0)
    colony = write_colony(home, "slow", goal="Take your time")
    await seed_pg_tasks(pg_url, "slow", ["a slow task\ndemo:delay 400"])
    sid = (await open_colony(client, colony))["session_id"]
    execution_id = (await trigger(client, sid))["execution_id"]
    await wait_events(client, sid, worker_delta(execution_id), timeout=20,
                      what="the worker to stream")
    resp = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": execution_id})
    body = await resp.json()
    # 200 means the worker ended the execution within the 1 s grace (202 would say it had not yet).
    assert resp.status == 200 and body["stopped"] is True, body
    [final] = await wait_events(client, sid, of_type(*FINAL, execution_id=execution_id), timeout=5, what="final")
    assert final["type"] == "execution_failed" and final["data"].get("cancelled") is True
    last_id = (await history(client, sid))[-1]["id"]
    await wait_until(lambda: rows(pg_url, "SELECT 1 FROM apiary_executions WHERE id = %s AND status = 'ended'",
                                  execution_id), what="the row to end")
    assert rows(pg_url, "SELECT outcome FROM apiary_executions WHERE colony = 'slow' AND id = %s",
                execution_id) == [("cancelled",)]
    stop_again = await client.post(f"/api/sessions/{sid}/stop", json={"execution_id": execution_id})
    assert stop_again.status == 404
    # Nothing of the stopped execution follows its final event.
    await wait_until(lambda: True, timeout=0.1)
    later = [e for e in await history(client, sid, after=last_id)
             if e.get("execution_id") == execution_id and e.get("stream_id") == "default"]
    assert later == []


async def test_pause_and_a_pending_execution_without_workers(make_client, home: Path, pg_url: str):
    client = await pg_client(make_client, pg_url, embedded_workers=0)   # no one to claim it
    colony = write_colony(home, "idle", goal="Nobody runs this")
    sid = (await open_colony(client, colony))["session_id"]
    execution_id = (await trigger(client, sid))["execution_id"]
    workers = await (await client.get(f"/api/sessions/{sid}/workers")).json()
    assert [(w["worker_id"], w["status"]) for w in workers["workers"]] == [(execution_id, "pending")]
    resp = await client.post(f"/api/sessions/{sid}/pause")
    body = await resp.json()
    assert resp.status == 200 and body["cancelled"] == [execution_id], body
    assert rows(pg_url, "SELECT status, outcome FROM apiary_executions WHERE id = %s", execution_id) == [
        ("ended", "cancelled")]
    [final] = await wait_events(client, sid, of_type(*FINAL, execution_id=execution_id), what="final event")
    assert final["data"]["cancelled"] is True


async def test_colony_spawn_seeds_the_shared_queue(make_client, pg_url: str):
    client = await pg_client(make_client, pg_url)
    queen = await create_session(client)
    await wait_events(client, queen["session_id"], of_type("client_input_requested"), what="the queen to park")
    resp = await client.post(f"/api/sessions/{queen['session_id']}/colony-spawn", json={
        "colony_name": "spawned", "tasks": [{"goal": "one"}, {"goal": "two"}]})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["task_queue"] == {"backend": "postgresql", "database": body["db_path"], "table": "apiary_tasks",
                                  "colony": "spawned"}
    assert body["db_path"] == pg_url   # no password in this URL; one would show as ***
    assert sorted(r[0] for r in rows(pg_url, "SELECT goal FROM apiary_tasks WHERE colony = 'spawned'")) == [
        "one", "two"]
    assert sorted(body["task_ids"]) == sorted(r[0] for r in rows(
        pg_url, "SELECT id FROM apiary_tasks WHERE colony = 'spawned'"))


def test_database_urls_are_shown_without_their_password():
    from apiary.core.urls import redact_url

    assert redact_url("postgresql://bee:s3cret@db.example:6432/hive") == "postgresql://bee:***@db.example:6432/hive"
    assert redact_url("postgresql://bee@db/hive") == "postgresql://bee@db/hive"


async def test_a_session_is_served_by_one_api_server_at_a_time(make_client, pg_url: str):
    first = await pg_client(make_client, pg_url)
    sid = (await create_session(first))["session_id"]
    # A second API server on the same database (and, here, the same home folder).
    second = await pg_client(make_client, pg_url)
    resp = await second.post(f"/api/sessions/{sid}/chat", json={"message": "hello"})   # would restore the queen
    body = await resp.json()
    assert resp.status == 409 and "served by another API server" in body["error"], body
    holder = rows(pg_url, "SELECT owner FROM apiary_session_leases WHERE session_id = %s", sid)
    assert holder and body["held_by"] == holder[0][0]
    assert (await first.post(f"/api/sessions/{sid}/chat", json={"message": "hello"})).status == 200
    await first.close()   # shutdown gives the leases up
    assert rows(pg_url, "SELECT count(*) FROM apiary_session_leases WHERE session_id = %s", sid) == [(0,)]
    resp = await second.post(f"/api/sessions/{sid}/chat", json={"message": "hello again"})
    assert resp.status == 200, await resp.text()
    assert rows(pg_url, "SELECT owner FROM apiary_session_leases WHERE session_id = %s", sid) != holder


async def test_a_stopping_server_gives_its_executions_back_and_the_next_one_resumes(make_client, home: Path,
                                                                                   pg_url: str):
    client = await pg_client(make_client, pg_url)
    colony = write_colony(home, "handover", tools=["run_command"], goal="Slow work")
    # The worker acts on the directives of its task's goal: a tool call that takes a while.
    [task_id] = await seed_pg_tasks(pg_url, "handover", ['the one task\ndemo:tool run_command {"command": "sleep 3"}'])
    sid = (await open_colony(client, colony))["session_id"]
    execution_id = (await trigger(client, sid))["execution_id"]
    await wait_events(client, sid, of_type("tool_call_started", execution_id=execution_id, stream_id="default"),
                      timeout=20, what="the worker's slow tool call")
    await client.close()   # shutdown: the embedded worker stops the execution at a checkpoint and releases it
    assert rows(pg_url, "SELECT status, worker, attempts FROM apiary_executions WHERE id = %s", execution_id) == [
        ("pending", None, 1)]
    assert rows(pg_url, "SELECT status FROM apiary_tasks WHERE id = %s", task_id) == [("in_progress",)]
    again = await pg_client(make_client, pg_url)
    await open_colony(again, colony)
    [final] = await wait_events(again, sid, of_type(*FINAL, execution_id=execution_id), timeout=30,
                                what="the resumed execution to end")
    assert final["type"] == "execution_completed", final
    resumed = await wait_events(again, sid, of_type("execution_resumed", execution_id=execution_id), what="resume")
    assert resumed[0]["data"]["resumed_from"] == execution_id
    await wait_until(lambda: rows(pg_url, "SELECT 1 FROM apiary_executions WHERE id = %s AND status = 'ended'",
                                  execution_id), what="the row to end")
    assert rows(pg_url, "SELECT outcome, attempts FROM apiary_executions WHERE id = %s", execution_id) == [
        ("completed", 2)]
    done = rows(pg_url, "SELECT count(*) FROM apiary_task_events WHERE task_id = %s AND kind = 'done'", task_id)
    assert done == [(1,)]


def test_apiary_worker_refuses_a_database_it_cannot_share(tmp_path: Path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    done = subprocess.run([sys.executable, "-m", "apiary", "worker", "--home", str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode != 0
    assert "apiary worker needs a shared database: --database postgresql://" in done.stderr


async def test_tasks_seeded_together_are_claimed_in_the_order_given(pg_url: str):
    from apiary.storage.postgres.database import PgDatabase
    from apiary.storage.postgres.tasks import PgTaskQueue

    goals = [f"task {i}" for i in range(20)]
    ids = await seed_pg_tasks(pg_url, "ordered", goals)
    db = await PgDatabase.open(pg_url)
    try:
        queue = PgTaskQueue(db, "ordered")
        claimed = [(await queue.claim("w")).goal for _ in goals]
    finally:
        await db.close()
    assert claimed == goals and len(ids) == 20


async def test_a_restarted_server_takes_over_the_leases_of_its_dead_predecessor(make_client, pg_url: str):
    import asyncio
    import socket
    import sys

    client = await pg_client(make_client, pg_url)
    sid = (await create_session(client))["session_id"]
    # The lease as a killed server on this host left it: a pid that no longer runs, an hour to go.
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()   # its pid no longer runs
    holder = f"{socket.gethostname()}:{proc.pid}:abc123"
    await client.close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO apiary_session_leases VALUES (%s, %s, now() + interval '1 hour')"
                     " ON CONFLICT (session_id) DO UPDATE SET owner = EXCLUDED.owner,"
                     " lease_until = EXCLUDED.lease_until", (sid, holder))
    again = await pg_client(make_client, pg_url)
    resp = await again.post(f"/api/sessions/{sid}/chat", json={"message": "back again"})
    assert resp.status == 200, await resp.text()
    assert rows(pg_url, "SELECT owner FROM apiary_session_leases WHERE session_id = %s", sid)[0][0] != holder
