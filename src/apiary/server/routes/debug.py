"""Process figures for soak runs (apiary addition): ``GET /api/debug/runtime``.

``loop_lag_ms_max`` comes from a monitor that sleeps 100 ms at a time and measures how late it wakes: the
longest the event loop was blocked since the previous call. ``loop_lag_histogram`` counts every wake-up
since the start by lateness (``counts[i]``: late by at most ``bounds_ms[i]``, the last one: more), so a
soak can take percentiles between two calls.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from apiary.server.routing import Route

LAG_BOUNDS_MS = (1, 2, *range(5, 100, 5), *range(100, 500, 25), *range(500, 2001, 100))


class LoopLagMonitor:
    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.max_ms = 0.0
        self.last_ms = 0.0
        self.counts = [0] * (len(LAG_BOUNDS_MS) + 1)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval_s)
            self.last_ms = max(0.0, (loop.time() - started - self.interval_s) * 1000)
            self.max_ms = max(self.max_ms, self.last_ms)
            self.counts[bisect.bisect_left(LAG_BOUNDS_MS, self.last_ms)] += 1

    def take_max(self) -> float:
        worst, self.max_ms = self.max_ms, 0.0
        return worst

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")
        yield
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


LAG_MONITOR = web.AppKey("apiary.loop_lag", LoopLagMonitor)


def _rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


async def runtime(request: web.Request) -> web.Response:
    monitor = request.app[LAG_MONITOR]
    return web.json_response({"asyncio_tasks": len(asyncio.all_tasks()),
                              "loop_lag_ms_max": round(monitor.take_max(), 2),
                              "loop_lag_ms_last": round(monitor.last_ms, 2),
                              "loop_lag_histogram": {"bounds_ms": list(LAG_BOUNDS_MS), "counts": list(monitor.counts)},
                              "open_fds": _open_fds(), "rss_bytes": _rss_bytes(),
                              # ``apiary serve`` starts with it off and turns it on once listening
                              "gc_enabled": gc.isenabled(), "gc_frozen_objects": gc.get_freeze_count()})


ROUTES = [Route("GET", "/api/debug/runtime", runtime, "Process figures: asyncio tasks, event-loop lag, fds, RSS")]
