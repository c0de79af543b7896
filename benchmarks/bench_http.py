"""Benchmark 3: HTTP latency of a chat, seen by a client on the event stream.

What: against a real ``python -m apiary serve --port 0`` process on the demo model (no delay), a
client holds the session's SSE stream open and sends ``POST /chat``. Two times per chat, from just
before the POST is written: the first SSE frame of this chat (``client_input_received``, published
before the route answers), and the end of the turn (``llm_turn_complete`` and, right after it,
``client_input_requested``: the queen waits for input again). 1,000 chats (quick: 100), with 1 client
and with 100 clients on 100 sessions chatting at once (each client waits for its turn to end
before its next chat). Each case stops starting chats after 60 s (the count says how many ran). One
warm-up chat before each case is not counted. The client runs on the same 2 cores as the server, so it competes with it.

Why: the first event is what makes a UI feel live, turn complete is how long the harness adds to a
reply that the model produced at once (the demo reply is ~25 streamed words, each stored in the
event log before it is sent).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, quick_flag, sse_frames, start_server, summary

DONE = "client_input_requested"


class Client:
    """One session, its SSE reader, and chats timed against the frames it receives."""

    def __init__(self, http: aiohttp.ClientSession, api: str, sid: str) -> None:
        self.http, self.api, self.sid = http, api, sid
        self.frames: asyncio.Queue[tuple[float, int | None, dict[str, Any]]] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.first: list[float] = []
        self.turn: list[float] = []
        self.idle: list[float] = []

    async def open(self) -> None:
        ready = asyncio.Event()

        async def read() -> None:
            async with self.http.get(f"{self.api}/sessions/{self.sid}/events",
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                ready.set()
                async for event_id, data in sse_frames(resp):
                    self.frames.put_nowait((time.perf_counter(), event_id, data))

        self.reader = asyncio.create_task(read())
        await ready.wait()
        # The greeting turn of a new session ends with client_input_requested.
        await self._until(DONE, timeout=30)

    async def _until(self, type_: str, timeout: float = 30.0) -> float:
        while True:
            at, _, data = await asyncio.wait_for(self.frames.get(), timeout)
            if data.get("type") == type_:
                return at

    async def chat(self, text: str) -> None:
        while not self.frames.empty():   # nothing of an earlier turn may count for this one
            self.frames.get_nowait()
        t0 = time.perf_counter()
        post = asyncio.create_task(self.http.post(f"{self.api}/sessions/{self.sid}/chat", json={"message": text}))
        first = turn = None
        while True:
            at, _, data = await asyncio.wait_for(self.frames.get(), 30)
            if first is None:
                first = at
            if data.get("type") == "llm_turn_complete":
                turn = at
            if data.get("type") == DONE:
                resp = await post
                resp.release()
                self.first.append((first - t0) * 1000)
                self.turn.append(((turn or at) - t0) * 1000)
                self.idle.append((at - t0) * 1000)
                return

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


async def scenario(api: str, clients: int, chats: int, *, warm_up: bool = True,
                   max_s: float | None = None) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        limit = asyncio.Semaphore(10)

        async def create() -> str:
            async with limit, http.post(f"{api}/sessions", json={}) as resp:
                return str((await resp.json())["session_id"])

        sessions = await asyncio.gather(*(create() for _ in range(clients)))
        group = [Client(http, api, sid) for sid in sessions]
        await asyncio.gather(*(c.open() for c in group))
        if warm_up:
            await group[0].chat("warm up")   # first use of the chat code paths, not counted
        group[0].first.clear(), group[0].turn.clear(), group[0].idle.clear()
        per_client = max(1, chats // clients)
        t0 = time.perf_counter()

        async def drive(c: Client) -> None:
            for n in range(per_client):
                if max_s is not None and time.perf_counter() - t0 > max_s:
                    return   # bounded in time: fewer chats than asked, reported as such
                await c.chat(f"Hello queen, message {n}")

        await asyncio.gather(*(drive(c) for c in group))
        wall = time.perf_counter() - t0
        for c in group:
            await c.close()
    first = [x for c in group for x in c.first]
    turn = [x for c in group for x in c.turn]
    idle = [x for c in group for x in c.idle]
    return {"clients": clients, "chats": len(first), "chats_asked": per_client * clients, "max_s": max_s,
            "wall_s": round(wall, 3),
            "chats_per_s": round(len(first) / wall, 1), "first_event_ms": summary(first),
            "turn_complete_ms": summary(turn), "input_requested_ms": summary(idle)}


async def main() -> None:
    quick = quick_flag()
    chats = 100 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="apiary-bench-http-") as tmp:
        server = await start_server(Path(tmp) / "home")
        try:
            results = {"1": await scenario(server.api, 1, chats, max_s=60),
                       "100": await scenario(server.api, 100, chats, max_s=60)}
        finally:
            await server.stop()
    emit({"scenarios": results, "quick": quick})


if __name__ == "__main__":
    asyncio.run(main())
