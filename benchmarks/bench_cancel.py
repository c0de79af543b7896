"""Benchmark 6: cancel -> quiet. How fast a stop takes effect, and that nothing leaks after it.

What: on a real ``apiary serve`` process (demo model), a colony is spawned with enough tasks whose
goal is ``demo:delay 20`` (the worker's demo model streams its words 20 ms apart) and opened in a
session that holds the SSE stream. Then, 100 times (quick: 20): ``POST /trigger`` (it claims the next
pending task), wait for the first ``llm_text_delta`` of that run on the stream, ``POST /stop`` with the
execution id, and time from just before the stop request to the run's final event
(``execution_failed`` with ``cancelled: true``); then watch 300 ms more. Every event of the run is
identified by its ``run_id`` (each trigger starts a new run; the execution id is the session's).
Counted: events of the run after its final event (must be 0), and model text deltas / tool calls of
the run that reached the client after ``/stop`` had answered (must be 0). The stop's own response
time is reported too.

Why: a stop is only trustworthy when it is quick and final: no token streams and no tool runs after
the user was told it stopped.
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

EFFECTS = ("llm_text_delta", "tool_call_started", "tool_call_completed")


async def main() -> None:
    quick = quick_flag()
    stops = 20 if quick else 100
    with tempfile.TemporaryDirectory(prefix="apiary-bench-cancel-") as tmp:
        server = await start_server(Path(tmp) / "home")
        try:
            result = await run(server.api, stops)
        finally:
            await server.stop()
    emit({**result, "quick": quick})


async def run(api: str, stops: int) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(f"{api}/sessions", json={}) as resp:
            sid = (await resp.json())["session_id"]
        tasks = [{"goal": "demo:delay 20", "seq": n} for n in range(stops + 5)]
        async with http.post(f"{api}/sessions/{sid}/colony-spawn", json={"colony_name": "b", "tasks": tasks}) as resp:
            assert resp.status == 200, await resp.text()
            path = (await resp.json())["colony_path"]
        async with http.post(f"{api}/sessions", json={"agent_path": path}) as resp:
            assert resp.status in (200, 201), await resp.text()
            cid = (await resp.json())["session_id"]

        frames: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        opened = asyncio.Event()

        async def read() -> None:
            async with http.get(f"{api}/sessions/{cid}/events",
                                timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                opened.set()
                async for _, data in sse_frames(resp):
                    frames.put_nowait((time.perf_counter(), data))

        reader = asyncio.create_task(read())
        await opened.wait()
        await asyncio.sleep(0.3)
        to_final: list[float] = []
        stop_answer: list[float] = []
        in_flight: list[int] = []
        after_final = 0
        after_answer = 0
        not_cancelled = 0
        for _ in range(stops):
            while not frames.empty():
                frames.get_nowait()
            async with http.post(f"{api}/sessions/{cid}/trigger", json={}) as resp:
                assert resp.status == 200, await resp.text()
                execution_id = (await resp.json())["execution_id"]
            run_id = None
            while run_id is None:   # the first token of this run
                _, data = await asyncio.wait_for(frames.get(), 30)
                if data.get("type") == "llm_text_delta" and data.get("execution_id") == execution_id:
                    run_id = data.get("run_id")
            t0 = time.perf_counter()
            async with http.post(f"{api}/sessions/{cid}/stop", json={"execution_id": execution_id}) as resp:
                body = await resp.json()
                answered = time.perf_counter()
            stop_answer.append((answered - t0) * 1000)
            final_at = None
            deltas = 0
            while final_at is None:
                at, data = await asyncio.wait_for(frames.get(), 30)
                if data.get("run_id") != run_id:
                    continue
                if data.get("type") in EFFECTS:
                    deltas += 1
                    if at > answered:
                        after_answer += 1
                if data.get("type") in ("execution_failed", "execution_completed", "execution_paused"):
                    final_at = at
                    if not (data.get("data") or {}).get("cancelled"):
                        not_cancelled += 1
            to_final.append((final_at - t0) * 1000)
            in_flight.append(deltas)
            deadline = time.perf_counter() + 0.3
            while (left := deadline - time.perf_counter()) > 0:
                try:
                    _, data = await asyncio.wait_for(frames.get(), left)
                except TimeoutError:
                    break
                if data.get("run_id") == run_id:
                    after_final += 1
            if not body.get("stopped"):
                not_cancelled += 1
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    tenth = max(1, stops // 10)
    return {"stops": stops, "stop_to_final_event_ms": summary(to_final), "stop_response_ms": summary(stop_answer),
            "first_tenth_p50_ms": summary(to_final[:tenth])["p50"],
            "last_tenth_p50_ms": summary(to_final[-tenth:])["p50"],
            "series_ms": [round(x, 2) for x in to_final],
            "events_after_final": after_final, "effects_after_stop_answered": after_answer,
            "effects_in_flight_between_stop_and_final": sum(in_flight), "not_cancelled": not_cancelled}


if __name__ == "__main__":
    asyncio.run(main())
