"""``python -m apiary serve`` as a real process: cold start, a SIGKILL in the middle of a streamed
turn, and SIGTERM with an open event stream (SPEC A 1.8, 4.2, 5; B 3.4, acceptance 36)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 30


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    url: str
    home: Path
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30)

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await self.client.aclose()
        return code


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Server] = []

    async def start(home: Path | None = None) -> Server:
        home = home or tmp_path / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "apiary", "serve", "--port", "0", "--home", str(home),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=tmp_path, env=env)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)).decode()
        assert line.startswith("apiary listening on http://127.0.0.1:"), line
        server = Server(proc, line.split()[3], home)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.returncode is None:
            server.proc.kill()
            await server.proc.wait()
        await server.client.aclose()


class Stream:
    """An SSE connection read in the background; ``frames`` grows as events arrive."""

    def __init__(self, client: httpx.AsyncClient, path: str, **params: str) -> None:
        self.frames: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._read(client, path, params))

    async def _read(self, client: httpx.AsyncClient, path: str, params: dict[str, str]) -> None:
        current: dict[str, Any] = {}
        try:
            async with client.stream("GET", path, params=params, timeout=None) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    self.lines.append(line)
                    if line.startswith("id: "):
                        current["_id"] = int(line[4:])
                    elif line.startswith("data: "):
                        current.update(json.loads(line[6:]))
                    elif line == "" and current:
                        self.frames.append(current)
                        current = {}
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass
        finally:
            self.ended.set()

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 20):
        async def poll() -> list[dict[str, Any]]:
            while True:
                found = [f for f in self.frames if pred(f)]
                if len(found) >= count:
                    return found
                if self.ended.is_set():
                    raise AssertionError("stream ended first")
                await asyncio.sleep(0.01)

        return await asyncio.wait_for(poll(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def of_type(type_: str, after: int = 0) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("type") == type_ and f.get("_id", 0) > after


async def test_cold_start_answers_health(start_server):
    server = await start_server()
    resp = await server.client.get("/api/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    # The start runs with the cyclic GC off; by the time it listens the GC is back on, with the
    # start-up objects frozen out of later collections (cli serve + server/app.py _gc_after_start).
    runtime = (await server.client.get("/api/debug/runtime")).json()
    assert runtime["gc_enabled"] is True
    assert runtime["gc_frozen_objects"] > 10_000
    assert await server.kill(signal.SIGTERM) == 0


async def test_sigkill_mid_turn_then_restart_on_the_same_home(start_server):
    server = await start_server()
    sid = (await server.client.post("/api/sessions", json={"initial_phase": "reviewing"})).json()["session_id"]
    stream = Stream(server.client, f"/api/sessions/{sid}/events", last_event_id="0")
    await stream.wait_for(of_type("client_input_requested"))
    resp = await server.client.post(f"/api/sessions/{sid}/chat",
                                    json={"message": "demo:delay 50\nplease answer slowly with many words"})
    after = resp.json()["after_seq"]
    await stream.wait_for(of_type("client_output_delta", after), count=3)
    assert await server.kill() == -signal.SIGKILL       # in the middle of the streamed reply
    await stream.close()
    seen_before = list(stream.frames)
    assert "llm_turn_complete" not in [f["type"] for f in seen_before if f["_id"] > after]

    with sqlite3.connect(server.home / "apiary.db") as db:
        last_before_restart = db.execute("SELECT MAX(id) FROM events WHERE session_id = ?", (sid,)).fetchone()[0]
    assert last_before_restart >= seen_before[-1]["_id"]

    server = await start_server(server.home)
    cold = (await server.client.get(f"/api/sessions/{sid}")).json()
    assert cold["cold"] is True
    stream = Stream(server.client, f"/api/sessions/{sid}/events", last_event_id="0")
    restored = await stream.wait_for(of_type("client_input_requested", last_before_restart))
    detail = (await server.client.get(f"/api/sessions/{sid}")).json()
    assert (detail["session_id"], detail["queen_phase"]) == (sid, "reviewing")
    # the restored queen parks again and runs no turn without input
    assert [f["type"] for f in stream.frames if f["_id"] > last_before_restart] == [
        "node_loop_started", "client_input_requested"]
    # everything a client saw before the kill is in the log, unchanged
    replayed = {f["_id"]: f for f in stream.frames}
    for frame in seen_before:
        assert replayed[frame["_id"]] == frame
    ids = [f["_id"] for f in stream.frames]
    assert ids == list(range(1, restored[0]["_id"] + 1))
    # the partial reply was kept, marked truncated
    with sqlite3.connect(server.home / "apiary.db") as db:
        rows = [json.loads(r[0]) for r in db.execute(
            "SELECT body FROM conv_messages WHERE owner = ? ORDER BY seq", (f"queen:{sid}",))]
    truncated = [m for m in rows if m.get("truncated")]
    assert len(truncated) == 1 and truncated[0]["role"] == "assistant" and truncated[0]["content"]
    last_logged = [f for f in stream.frames if f["type"] == "client_output_delta" and f["_id"] > after][-1]
    assert last_logged["data"]["snapshot"].startswith(truncated[0]["content"])
    # the queen goes on: a new reply streams, ids continue
    resp = await server.client.post(f"/api/sessions/{sid}/chat", json={"message": "are you back?"})
    assert resp.status_code == 200
    again = resp.json()["after_seq"]
    assert again == restored[0]["_id"] + 1
    await stream.wait_for(of_type("llm_turn_complete", again))
    parked = await stream.wait_for(of_type("client_input_requested", again))
    reply = [f for f in stream.frames if f["type"] == "client_output_delta" and f["_id"] > again]
    assert reply and "are you back?" in reply[-1]["data"]["snapshot"]
    await stream.close()
    ids = [f["_id"] for f in stream.frames if f["_id"] <= parked[0]["_id"]]
    assert ids == list(range(1, parked[0]["_id"] + 1))
    history = (await server.client.get(f"/api/sessions/{sid}/events/history", params={"limit": "10000"})).json()
    hist_ids = [e["id"] for e in history["events"]]
    assert hist_ids == sorted(set(hist_ids)) and hist_ids[0] == 1 and hist_ids[-1] >= parked[0]["_id"]
    assert await server.kill(signal.SIGTERM) == 0


async def test_sigterm_with_an_open_stream_exits_promptly(start_server):
    server = await start_server()
    sid = (await server.client.post("/api/sessions", json={})).json()["session_id"]
    stream = Stream(server.client, f"/api/sessions/{sid}/events", last_event_id="0")
    await stream.wait_for(of_type("client_input_requested"))
    server.proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(server.proc.wait(), 2.0)   # SPEC A 4.2: shutdown never waits for a stream
    assert code == 0
    await asyncio.wait_for(stream.ended.wait(), 2.0)
    await stream.close()
    await server.client.aclose()
