"""One API server and three ``apiary worker`` processes on one PostgreSQL database (each worker with a
home of its own, as on another host). A worker is killed with SIGKILL mid-task: its lease expires,
another worker resumes the execution from its last checkpoint, every task completes exactly once, and
the SSE client on the API server sees every event of every worker, in order, with nothing missing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from colony_helpers import seed_pg_tasks, write_colony
from helpers import wait_until

pytestmark = pytest.mark.e2e

FINAL = ("execution_completed", "execution_failed", "execution_paused")
ENTRY_POINTS = ("a", "b", "c")
TASKS = 6
ENV = {"APIARY_COLONIES__WORKER_LEASE_S": "2", "APIARY_COLONIES__WORKER_POLL_S": "0.3",
       "APIARY_COLONIES__STALE_CLAIM_S": "6", "APIARY_COLONIES__HEARTBEAT_S": "1",
       "APIARY_COLONIES__CANCEL_GRACE_S": "1", "APIARY_COLONIES__EMBEDDED_WORKERS": "0"}


class Proc:
    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self._drains: list[asyncio.Future[None]] = []

    async def start(self, ready: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
        env.update(ENV)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "apiary", "--log-level", "info", *self.args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        stream = self.proc.stdout if ready.startswith("apiary listening") else self.proc.stderr
        assert stream is not None
        while True:
            line = (await asyncio.wait_for(stream.readline(), 30)).decode()
            assert line, f"{self.args[0]} exited before it was ready"
            if ready in line:
                self._drain()
                return line

    def _drain(self) -> None:
        # Keep reading both pipes, so a chatty process never blocks on a full pipe.
        assert self.proc is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                self._drains.append(asyncio.ensure_future(_discard(stream)))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 30)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def q(pg_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return list(conn.execute(sql, params).fetchall())


async def collect_sse(http: aiohttp.ClientSession, url: str, into: list[dict[str, Any]]) -> None:
    """Every event type the stream offers, from the first event on (``Last-Event-ID: 0``)."""
    from apiary.server.routes.events import KNOWN_TYPES

    async with http.get(url, params={"types": ",".join(sorted(KNOWN_TYPES))}, headers={"Last-Event-ID": "0"},
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))


async def test_three_workers_one_killed_every_task_once_every_event_seen(tmp_path: Path, pg_url: str):
    from apiary.storage import migrate_database

    await migrate_database(pg_url, home=tmp_path)
    api_home = tmp_path / "api"
    colony = write_colony(api_home, "swarm", goal="Work the queue",
                          extra={"entry_points": [{"id": ep, "name": ep} for ep in ENTRY_POINTS[1:]]})
    # "default" is always there: use it and two more, so three executions run at once.
    streams = ("default", *ENTRY_POINTS[1:])
    goals = [f"task {i}\ndemo:delay 120" for i in range(TASKS)]
    task_ids = await seed_pg_tasks(pg_url, "swarm", goals)

    api = Proc("serve", "--port", "0", "--home", str(api_home), "--database", pg_url)
    workers = [Proc("worker", "--database", pg_url, "--home", str(tmp_path / f"w{i}"), "--concurrency", "1")
               for i in range(3)]
    procs = [api, *workers]
    events: list[dict[str, Any]] = []
    try:
        line = await api.start("apiary listening on")
        base = line.split()[3]
        for worker in workers:
            await worker.start("ready (database")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/sessions", json={"agent_path": str(colony)}) as resp:
                assert resp.status == 201, await resp.text()
                sid = (await resp.json())["session_id"]
            reader = asyncio.ensure_future(collect_sse(http, f"{base}/api/sessions/{sid}/events", events))

            def finals() -> dict[str, str]:
                return {e["execution_id"]: e["type"] for e in events if e["type"] in FINAL}

            started: dict[str, str] = {}   # execution id -> stream

            async def trigger(stream: str) -> str:
                # Each execution its own worker session (by default they all take the session's id).
                body = {"entry_point_id": stream, "session_state": {"resume_session_id": f"x{len(started)}_{stream}"}}
                async with http.post(f"{base}/api/sessions/{sid}/trigger", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    execution_id = (await resp.json())["execution_id"]
                started[execution_id] = stream
                return execution_id

            for stream in streams:
                await trigger(stream)

            # Kill the worker of one execution once that execution holds a task and has a checkpoint.
            def victim() -> tuple[str, str] | None:
                found = q(pg_url, "SELECT e.id, e.worker FROM apiary_executions e JOIN apiary_tasks t ON"
                          " t.colony = e.colony AND t.worker_id = e.id AND t.status = 'in_progress' WHERE"
                          " e.status = 'running' AND EXISTS (SELECT 1 FROM apiary_checkpoints c WHERE"
                          " c.colony = e.colony AND c.session_id = e.id)")
                return (found[0][0], found[0][1]) if found else None

            killed_execution, killed_name = await wait_until(victim, timeout=60, what="an execution mid-task")
            [dead] = [w for w in workers if killed_name.endswith(f":{w.pid}")]
            await dead.kill()
            assert killed_execution not in finals()

            # Keep every stream busy until the queue is empty.
            async def queue_done() -> bool:
                ended = finals()
                busy = {started[e] for e in started if e not in ended}
                pending = q(pg_url, "SELECT count(*) FROM apiary_tasks WHERE colony = 'swarm' AND status = 'pending'")
                if pending[0][0]:
                    for stream in streams:
                        if stream not in busy:
                            await trigger(stream)
                            busy.add(stream)
                return all(e in ended for e in started) and not pending[0][0]

            await wait_until(queue_done, timeout=120, what="every task to be worked")
            # The stream has caught up with the log once it shows the last stored event.
            from apiary.server.routes.events import KNOWN_TYPES

            def log() -> list[tuple[int, str]]:
                return [(i, t) for i, t in q(pg_url, "SELECT id, type FROM apiary_events WHERE session_id = %s"
                                                     " ORDER BY id", sid)]

            agreed: dict[str, list[int]] = {}

            def caught_up() -> bool:   # the queen may still be answering the reports: read both again
                stored = log()
                offered = [i for i, t in stored if t in KNOWN_TYPES]
                if [e["id"] for e in events] != offered:
                    return False
                agreed.update(log_ids=[i for i, _ in stored], offered=offered)
                return True

            await wait_until(caught_up, timeout=15, what="the SSE stream to hold every stored event")
            log_ids, offered = agreed["log_ids"], agreed["offered"]
            reader.cancel()

        # Every task done, each exactly once.
        statuses = dict(q(pg_url, "SELECT id, status FROM apiary_tasks WHERE colony = 'swarm'"))
        assert statuses == {t: "done" for t in task_ids}
        done = Counter(r[0] for r in q(pg_url, "SELECT task_id FROM apiary_task_events WHERE colony = 'swarm'"
                                       " AND kind = 'done'"))
        assert done == Counter({t: 1 for t in task_ids})
        # The killed execution was taken over by another worker and completed there.
        [(attempts, holder, outcome)] = q(pg_url, "SELECT attempts, worker, outcome FROM apiary_executions WHERE"
                                          " colony = 'swarm' AND id = %s", killed_execution)
        assert attempts >= 2 and holder != killed_name and outcome == "completed"
        resumed = [e for e in events if e["type"] == "execution_resumed" and e["execution_id"] == killed_execution]
        assert resumed, "the second worker resumed from a checkpoint"
        # One final event per execution, each completed; the survivors did the work.
        final_events = Counter(e["execution_id"] for e in events if e["type"] in FINAL)
        assert final_events == Counter({e: 1 for e in started})
        assert set(finals().values()) == {"execution_completed"}
        holders = {r[0] for r in q(pg_url, "SELECT DISTINCT worker FROM apiary_executions WHERE colony = 'swarm'")}
        assert len(holders - {killed_name}) >= 2
        # The SSE client saw every stored event, in order, none twice: ids 1, 2, 3, ...
        seen = [e["id"] for e in events]
        assert log_ids == list(range(1, len(log_ids) + 1))
        assert seen[:len(offered)] == offered
        worker_events = [e for e in events if e.get("execution_id") in started]
        assert len(worker_events) > 10 * len(started)
    finally:
        for proc in procs:
            await proc.stop()


async def test_stop_on_the_api_server_stops_a_worker_process_within_a_second(tmp_path: Path, pg_url: str):
    from apiary.storage import migrate_database

    await migrate_database(pg_url, home=tmp_path)
    api_home = tmp_path / "api"
    colony = write_colony(api_home, "stoppy", goal="Work slowly")
    await seed_pg_tasks(pg_url, "stoppy", ["a long task\ndemo:delay 300"])
    api = Proc("serve", "--port", "0", "--home", str(api_home), "--database", pg_url)
    worker = Proc("worker", "--database", pg_url, "--home", str(tmp_path / "w"), "--concurrency", "1")
    events: list[dict[str, Any]] = []
    try:
        base = (await api.start("apiary listening on")).split()[3]
        await worker.start("ready (database")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/sessions", json={"agent_path": str(colony)}) as resp:
                sid = (await resp.json())["session_id"]
            reader = asyncio.ensure_future(collect_sse(http, f"{base}/api/sessions/{sid}/events", events))
            async with http.post(f"{base}/api/sessions/{sid}/trigger", json={}) as resp:
                execution_id = (await resp.json())["execution_id"]
            await wait_until(lambda: any(e["type"] == "llm_text_delta" and e.get("stream_id") == "default"
                                       for e in events), timeout=30, what="the worker process to stream")
            [(holder,)] = q(pg_url, "SELECT worker FROM apiary_executions WHERE id = %s", execution_id)
            assert holder.endswith(f":{worker.pid}")   # it runs in the other process
            async with http.post(f"{base}/api/sessions/{sid}/stop", json={"execution_id": execution_id}) as resp:
                body = await resp.json()
            # 200 (not 202) means the final event was in within the grace period of one second.
            assert resp.status == 200 and body["stopped"] is True, body
            await wait_until(lambda: any(e["type"] == "execution_failed" and e.get("stream_id") == "default"
                                       for e in events), timeout=10, what="the final event on the SSE stream")
            final = [e for e in events if e["type"] in FINAL and e.get("stream_id") == "default"]
            assert len(final) == 1 and final[0]["data"].get("cancelled") is True
            reader.cancel()
    finally:
        await worker.stop()
        await api.stop()
