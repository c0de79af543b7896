"""Benchmark 4: scale on one machine: memory per idle live session, and 1,000 agent loops at once.

What, part A: a real ``apiary serve`` process (demo model). After one warm-up session, 1,000 new
sessions (quick: 100) are created over HTTP, 10 requests at a time; each new session's queen greets
(one demo turn) and then waits for input, live in memory. Once the server's CPU time stops moving,
``VmRSS`` from ``/proc/<pid>/status`` is read; (RSS after - RSS before) / sessions is the memory of an
idle live session. RSS is also read at every fifth of the way, to show it is linear.

What, part B: in one process, 1,000 ``AgentLoop`` s (worker role) on one ``SqliteStores`` (one
apiary.db, as in the server), each running turns of one tool call on a scripted model that answers
after an ``asyncio.sleep`` of ``latency`` per call (a model's network wait: no CPU). A step is one
turn as in bench_harness. The offered load is set by the latency: 1,000 loops x 2 calls per turn at
1 s each is 500 turns/s. Each loop runs one turn and a closing ``set_output`` turn; the step between
them is measured. Quick: 100 loops, 0.5 s.

Two figures per step, because with 1,000 loops on one event loop they are different things:
- ``step_overhead_ms``, the time the harness adds to a step: the event-loop time spent running that
  loop's own code during its step (every callback and task step whose context belongs to that loop,
  its turn, tool and delta tasks included), plus an equal share per step of the shared work (the
  database's writer task (writer.py), callbacks from the database thread, and the
  CPU time of aiosqlite's thread, read from ``/proc``). It is what one step costs, whatever else runs.
- ``step_latency_ms``: the step's duration minus the two model waits, as measured before. With
  1,000 loops this also holds the time a ready step waits behind the other loops' work on the one
  event loop and the one database connection (``queueing_ms`` = latency - overhead), so it measures
  how far the offered 500 turns/s are from what one process sustains, not the harness's cost per
  step. Both are reported, with achieved turns/s and CPU use.

Why: sessions idle most of the time (waiting for a person), so their memory decides how many one
server holds; and with many agents the harness's CPU per step is what queues up behind one event
loop.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextvars
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


_LOOP = contextvars.ContextVar[int | None]("bench_loop", default=None)
# The database writer task (writer.py); the two names before it, so before/after runs read alike.
SHARED_TASKS = frozenset({"apiary-db-writer", "event-log-writer", "conversation-writer"})


class LoopTime:
    """Event-loop CPU time per agent loop: every callback run is timed (CPU time of the event loop's
    thread, so time spent waiting for the GIL or for a core on a busy machine is not counted) and
    credited to the loop whose context it runs in (tasks copy their creator's context, so a loop's
    turn, tool and delta tasks count as its own), or to ``shared`` (the storage writer tasks, which
    work for every loop, and callbacks with no loop, e.g. results coming back from the database
    thread)."""

    def __init__(self, loops: int) -> None:
        self.own = [0] * loops
        self.shared = 0
        self._orig: Any = None

    def install(self) -> None:
        orig = self._orig = asyncio.events.Handle._run
        own = self.own

        def timed(handle: Any) -> None:
            t0 = time.thread_time_ns()
            try:
                orig(handle)
            finally:
                dt = time.thread_time_ns() - t0
                task = getattr(handle._callback, "__self__", None)
                loop = None if handle._context is None else handle._context.get(_LOOP)
                if loop is None or (isinstance(task, asyncio.Task) and task.get_name() in SHARED_TASKS):
                    self.shared += dt
                else:
                    own[loop] += dt

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._orig is not None:
            asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]


def thread_cpu_ns(native_id: int | None) -> int:
    """utime + stime of one thread of this process, in ns (0 when unknown)."""
    if native_id is None:
        return 0
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


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
        clock = LoopTime(loops)
        own_at_start: list[list[int]] = [[] for _ in range(loops)]
        for n in range(loops):
            model = ScriptModel(turns, set(), latency_s=latency_s)
            model.on_start = (lambda n=n: own_at_start[n].append(clock.own[n]))  # type: ignore[misc]
            models.append(model)
            sid = f"s{n}"
            ctx = RunContext(role="worker", owner=f"worker:{sid}", run_id="r", llm=model,
                             config=LoopConfig(max_iterations=turns + 10, max_context_tokens=10**9),
                             emitter=Emitter(bus, sid, stream_id="default", node_id="worker", execution_id=sid),
                             conversations=stores.conversations, recordings=stores.recordings, clock=SystemClock(),
                             ids=RandomIds(), hooks=BaseHooks("You are a worker.", toolset),
                             tool_context=ToolContext(workspace=home, session_id=sid, node_id="worker"))
            runs.append(AgentLoop(ctx, initial_messages=["Goal: run the benchmark."]))

        async def start(n: int, loop: AgentLoop) -> Any:
            _LOOP.set(n)   # this task's context, and so that of every task the loop creates
            await asyncio.sleep(random.uniform(0, 2 * latency_s))   # spread the starts over one turn
            return await loop.run()

        db_thread = getattr(getattr(stores.db.conn, "_thread", None), "native_id", None)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        db0 = thread_cpu_ns(db_thread)
        t0 = time.perf_counter()
        clock.install()
        try:
            outcomes = await asyncio.gather(*(start(n, r) for n, r in enumerate(runs)), return_exceptions=True)
        finally:
            clock.uninstall()
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        db_cpu_ns = thread_cpu_ns(db_thread) - db0
        await stores.aclose()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    latency: list[float] = []
    own: list[float] = []
    for n, model in enumerate(models):
        starts = model.starts_ns
        marks = own_at_start[n]
        # every turn's step, the first included (1,000 loops warm the code paths up at once); each step
        # holds two model waits
        for i in range(len(starts) - 1):
            latency.append((starts[i + 1] - starts[i]) / 1e6 - 2 * latency_s * 1000)
            own.append((marks[i + 1] - marks[i]) / 1e6)
    steps = sum(max(0, len(m.starts_ns) - 1) for m in models)
    # The shared work (writers, thread callbacks, the database thread) is spread evenly over every turn
    # run, the fresh starts and closing turns included: all of it belongs to some turn.
    turns_run = sum(len(m.starts_ns) for m in models)
    shared_ms = (clock.shared + db_cpu_ns) / 1e6 / max(1, turns_run)
    overhead = [x + shared_ms for x in own]
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"loops": loops, "turns_each": turns, "model_latency_s": latency_s,
            "offered_turns_per_s": round(loops / (2 * latency_s), 1), "achieved_turns_per_s": round(steps / wall, 1),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_cores_used": round(cpu / wall, 2),
            "cpu_ms_per_turn": round(cpu * 1000 / max(1, steps), 3),
            "failed": len(failed),
            "step_overhead_ms": summary(overhead),
            "step_own_loop_ms": summary(own),
            "shared_ms_per_turn": round(shared_ms, 4),
            "db_thread_cpu_s": round(db_cpu_ns / 1e9, 3),
            "step_latency_ms": summary(latency),
            "queueing_ms": summary([a - b for a, b in zip(latency, overhead, strict=True)])}


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
