"""Benchmark 4: scale on one machine: memory per idle live session, and 1,000 agent loops at once.

What, part A: a real ``apiary serve`` process (demo model). After one warm-up session, 1,000 new
sessions (quick: 100) are created over HTTP, 10 requests at a time; each new session's queen greets
(one demo turn) and then waits for input, live in memory. Once the server's CPU time stops moving,
``VmRSS`` from ``/proc/<pid>/status`` is read; (RSS after - RSS before) / sessions is the memory of an
idle live session. RSS is also read at every fifth of the way, to show it is linear.

What, part B: in one process, 1,000 ``AgentLoop`` s (worker role) on one ``SqliteStores`` (one
apiary.db, as in the server), each running turns of one tool call on a scripted model that answers
after an ``asyncio.sleep`` of ``latency`` per call (a model's network wait: no CPU). A step is one
turn as in bench_harness; its *overhead* is its duration minus the two model waits. Reported: p50/p99
overhead, the turns per second the process sustained, and its CPU use. The offered load is set by
the latency: 1,000 loops x 2 calls per turn at 1 s each is 500 turns/s. Each loop runs one turn and
a closing ``set_output`` turn; the step between them is measured. Quick: 100 loops, 0.5 s.

Why: sessions idle most of the time (waiting for a person), so their memory decides how many one
server holds; and with many agents the harness's CPU per step is what queues up behind one event
loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, quick_flag, start_server, summary, vm_rss_kib


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


async def wait_quiet(pid: int, *, quiet_s: float = 1.0, timeout: float = 120.0) -> None:
    """Until the process used (almost) no CPU for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last = cpu_ticks(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = cpu_ticks(pid)
        if now - last <= 2:   # <= 20 ms of CPU in a second: idle
            return
        last = now


async def sessions_rss(total: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="apiary-bench-scale-") as tmp:
        server = await start_server(Path(tmp) / "home")
        pid = server.proc.pid
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10)) as http:
                async def create() -> str:
                    async with http.post(f"{server.api}/sessions", json={}) as resp:
                        assert resp.status == 201, await resp.text()
                        return (await resp.json())["session_id"]

                await create()   # warm-up: first session, first demo turn, lazy imports
                await wait_quiet(pid)
                base = vm_rss_kib(pid)
                curve = [(0, base)]
                step = max(1, total // 5)
                t0 = time.perf_counter()
                made = 0
                while made < total:
                    n = min(step, total - made)
                    await asyncio.gather(*(create() for _ in range(n)))
                    made += n
                    await wait_quiet(pid, quiet_s=0.3)
                    curve.append((made, vm_rss_kib(pid)))
                created_s = time.perf_counter() - t0
                await wait_quiet(pid)
                after = vm_rss_kib(pid)
                async with http.get(f"{server.api}/health") as resp:
                    health = await resp.json()
        finally:
            await server.stop()
    return {"sessions": total, "live_reported": health.get("sessions"), "rss_before_mib": round(base / 1024, 1),
            "rss_after_mib": round(after / 1024, 1), "per_session_mib": round((after - base) / 1024 / total, 4),
            "create_s": round(created_s, 2), "curve_kib": curve}


async def loops_under_load(loops: int, turns: int, latency_s: float) -> dict[str, Any]:
    from bench_harness import EchoTool, ScriptModel

    from apiary.agent.context import BaseHooks, RunContext
    from apiary.agent.emitter import Emitter
    from apiary.agent.loop import AgentLoop
    from apiary.agent.state import LoopConfig
    from apiary.bus.bus import EventBus
    from apiary.core.clock import SystemClock
    from apiary.core.ids import RandomIds
    from apiary.storage.sqlite.stores import SqliteStores
    from apiary.tools.base import ToolContext, Toolset

    with tempfile.TemporaryDirectory(prefix="apiary-bench-loops-") as tmp:
        home = Path(tmp)
        stores = await SqliteStores.open(home / "apiary.db")
        bus = EventBus(stores.events, SystemClock())
        toolset = Toolset([EchoTool()])
        models = []
        runs = []
        for n in range(loops):
            model = ScriptModel(turns, set(), latency_s=latency_s)
            models.append(model)
            sid = f"s{n}"
            ctx = RunContext(role="worker", owner=f"worker:{sid}", run_id="r", llm=model,
                             config=LoopConfig(max_iterations=turns + 10, max_context_tokens=10**9),
                             emitter=Emitter(bus, sid, stream_id="default", node_id="worker", execution_id=sid),
                             conversations=stores.conversations, recordings=stores.recordings, clock=SystemClock(),
                             ids=RandomIds(), hooks=BaseHooks("You are a worker.", toolset),
                             tool_context=ToolContext(workspace=home, session_id=sid, node_id="worker"))
            runs.append(AgentLoop(ctx, initial_messages=["Goal: run the benchmark."]))

        async def start(loop: AgentLoop) -> Any:
            await asyncio.sleep(random.uniform(0, 2 * latency_s))   # spread the starts over one turn
            return await loop.run()

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(start(r) for r in runs), return_exceptions=True)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        await stores.aclose()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    overhead: list[float] = []
    for model in models:
        starts = model.starts_ns
        # every turn's step, the first included (1,000 loops warm the code paths up at once); each step
        # holds two model waits
        for i in range(len(starts) - 1):
            overhead.append((starts[i + 1] - starts[i]) / 1e6 - 2 * latency_s * 1000)
    steps = sum(max(0, len(m.starts_ns) - 1) for m in models)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"loops": loops, "turns_each": turns, "model_latency_s": latency_s,
            "offered_turns_per_s": round(loops / (2 * latency_s), 1), "achieved_turns_per_s": round(steps / wall, 1),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_cores_used": round(cpu / wall, 2),
            "cpu_ms_per_turn": round(cpu * 1000 / max(1, steps), 3),
            "failed": len(failed), "step_overhead_ms": summary(overhead)}


async def main() -> None:
    quick = quick_flag()
    random.seed(7)
    result: dict[str, Any] = {"quick": quick}
    result["sessions"] = await sessions_rss(100 if quick else 1000)
    result["loops"] = [await loops_under_load(100, 1, 0.5) if quick else await loops_under_load(1000, 1, 1.0)]
    result["pid"] = os.getpid()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
