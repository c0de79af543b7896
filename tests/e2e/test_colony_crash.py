"""A server killed with SIGKILL mid-execution: the restarted server carries the work on (SPEC B 2.4, 3.9, 7).

Starts ``python -m apiary serve`` twice on the same home. After the restart, opening the colony
resumes the worker session left ``active`` from its latest checkpoint; the checks are on what the
routes, ``progress.db`` (its ``apiary_task_events`` audit table) and the event log hold. The
outcome-unknown window of a single tool call is covered in tests/server/test_crash_recovery.py,
where the recordings are prepared by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.e2e

LISTENING = re.compile(r"apiary listening on (http://127\.0\.0\.1:\d+)")
FINAL = ("execution_completed", "execution_failed", "execution_paused")
GOAL = 'collect pollen\ndemo:tool run_command {"command": "echo ran >> log.txt"}\ndemo:delay 100'


class Server:
    def __init__(self, home: Path, **env: str) -> None:
        self.home, self.env = home, env
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
        env.update(self.env)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "apiary", "serve", "--port", "0", "--home", str(self.home),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
        assert self.proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
            assert line, "the server exited before it listened"
            match = LISTENING.search(line)
            if match:
                self.url = match.group(1)
                return self

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


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json()


async def _events(http: aiohttp.ClientSession, base: str, sid: str) -> list[dict[str, Any]]:
    status, body = await _json(http, "GET", f"{base}/api/sessions/{sid}/events/history",
                               params={"limit": "10000"})
    assert status == 200
    return body["events"]


async def _wait(http, base, sid, pred, *, what, timeout=30.0, after=0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [e for e in await _events(http, base, sid) if e["id"] > after and pred(e)]
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _worker(e: dict[str, Any], sid: str) -> bool:
    return e["stream_id"] == "default" and e["execution_id"] == sid


async def test_sigkill_mid_execution_then_restart_carries_on(tmp_path):
    home = tmp_path / "home"
    first = await Server(home).start()
    second = None
    try:
        async with aiohttp.ClientSession() as http:
            base = first.url
            status, queen = await _json(http, "POST", f"{base}/api/sessions", json={})
            assert status == 201
            qid = queen["session_id"]
            await _wait(http, base, qid, lambda e: e["type"] == "client_input_requested", what="the queen to park")
            status, spawned = await _json(http, "POST", f"{base}/api/sessions/{qid}/colony-spawn", json={
                "colony_name": "crashy", "tasks": [{"goal": GOAL, "priority": 3}, {"goal": "second task"},
                                                   {"goal": "third task"}]})
            assert status == 200, spawned
            status, opened = await _json(http, "POST", f"{base}/api/sessions",
                                         json={"agent_path": spawned["colony_path"]})
            assert status == 201, opened
            sid = opened["session_id"]
            assert sid == spawned["queen_session_id"]
            status, body = await _json(http, "POST", f"{base}/api/sessions/{sid}/trigger", json={})
            assert (status, body) == (200, {"execution_id": sid})
            # Kill once the tool ran and the next model call is streaming (slowly, demo:delay).
            await _wait(http, base, sid, lambda e: _worker(e, sid) and e["type"] == "tool_call_completed",
                        what="the worker's tool call")
            before_kill = await _events(http, base, sid)
            assert not any(_worker(e, sid) and e["type"] in FINAL for e in before_kill)
        await first.kill()
        colony = Path(spawned["colony_path"])
        state_path = home / "agents" / "crashy" / "sessions" / sid / "state.json"
        assert json.loads(state_path.read_text())["status"] == "active"
        claimed = [r for r in _tasks(colony) if r["status"] in ("claimed", "in_progress")]
        assert [r["goal"] for r in claimed] == [GOAL]
        last_id_before = before_kill[-1]["id"]

        second = await Server(home, APIARY_COLONIES__STALE_CLAIM_S="1").start()
        async with aiohttp.ClientSession() as http:
            base = second.url
            status, opened = await _json(http, "POST", f"{base}/api/sessions",
                                         json={"agent_path": spawned["colony_path"]})
            assert status == 201, opened
            assert opened["session_id"] == sid
            done = await _wait(http, base, sid, lambda e: _worker(e, sid) and e["type"] in FINAL,
                               after=last_id_before, what="the resumed execution to end")
            assert done[0]["type"] == "execution_completed", done[0]
            events = await _events(http, base, sid)
            resumed = [e for e in events if e["type"] == "execution_resumed" and e["id"] > last_id_before]
            assert resumed and resumed[0]["data"]["resumed_from"] == sid
            status, listed = await _json(http, "GET", f"{base}/api/sessions/{sid}/worker-sessions")
            assert {w["worker_session_id"]: w["status"] for w in listed["worker_sessions"]}[sid] == "completed"
            status, cps = await _json(http, "GET", f"{base}/api/sessions/{sid}/worker-sessions/{sid}/checkpoints")
            assert resumed[0]["data"]["checkpoint_id"] in [c["checkpoint_id"] for c in cps["checkpoints"]]
        await second.stop()

        # The task of the dead worker was finished (after a reclaim, or held on); none is done twice.
        rows = {r["goal"]: r for r in _tasks(colony)}
        assert rows[GOAL]["status"] == "done"
        assert rows["second task"]["status"] == "pending" and rows["third task"]["status"] == "pending"
        audit = _audit(colony)
        done_counts = Counter(a["task_id"] for a in audit if a["kind"] == "done")
        assert done_counts == Counter({rows[GOAL]["id"]: 1})
        kinds = [a["kind"] for a in audit if a["task_id"] == rows[GOAL]["id"]]
        assert kinds[0] == "created" and kinds[-1] == "done"
        assert set(kinds) <= {"created", "claimed", "started", "reclaimed", "done"}
        # The tool that had finished before the kill was not run again.
        assert (colony / "workspace" / "log.txt").read_text().splitlines() == ["ran"]
        # Every started tool call got its completion, within each run of the execution or later.
        _check_tool_pairs(events, sid)
        # Event ids run 1, 2, 3, ... across the kill, without gaps or repeats.
        ids = _event_ids(home, sid)
        assert ids == list(range(1, len(ids) + 1))
        assert ids[-1] > last_id_before
    finally:
        await first.stop()
        if second is not None:
            await second.stop()


def _check_tool_pairs(events: list[dict[str, Any]], sid: str) -> None:
    segments: list[list[dict[str, Any]]] = []
    for e in events:
        if not _worker(e, sid):
            continue
        if e["type"] == "execution_started":
            segments.append([])
        elif segments:
            segments[-1].append(e)
    assert len(segments) == 2
    for index, segment in enumerate(segments):
        started = Counter(e["data"]["tool_use_id"] for e in segment if e["type"] == "tool_call_started")
        completed = Counter(e["data"]["tool_use_id"] for e in segment if e["type"] == "tool_call_completed")
        assert all(n == 1 for n in started.values()) and all(n == 1 for n in completed.values())
        if index == len(segments) - 1:
            assert started == completed
        else:   # the killed run: what it left open was closed by the run after it
            assert set(completed) <= set(started)
            later = {e["data"]["tool_use_id"] for s in segments[index + 1:] for e in s
                     if e["type"] == "tool_call_completed"}
            assert set(started) - set(completed) <= later


def _tasks(colony: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(colony / "data" / "progress.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM tasks")]
    finally:
        conn.close()


def _audit(colony: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(colony / "data" / "progress.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM apiary_task_events ORDER BY id")]
    finally:
        conn.close()


def _event_ids(home: Path, sid: str) -> list[int]:
    conn = sqlite3.connect(home / "apiary.db")
    try:
        return [r[0] for r in conn.execute("SELECT id FROM events WHERE session_id = ? ORDER BY id", (sid,))]
    finally:
        conn.close()
