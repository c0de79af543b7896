"""``GET /api/debug/runtime`` reports tasks, fds, RSS and the worst event-loop lag since the last call."""

from __future__ import annotations

import asyncio
import time


async def test_runtime_figures_and_loop_lag(api):
    first = await (await api.get("/api/debug/runtime")).json()
    assert first["asyncio_tasks"] >= 1
    assert first["open_fds"] > 0
    assert first["rss_bytes"] > 10_000_000
    await asyncio.sleep(0.15)
    time.sleep(0.3)    # block the loop the server shares with the test on purpose
    await asyncio.sleep(0.25)
    blocked = await (await api.get("/api/debug/runtime")).json()
    assert blocked["loop_lag_ms_max"] >= 150
    calm = await (await api.get("/api/debug/runtime")).json()
    assert calm["loop_lag_ms_max"] < blocked["loop_lag_ms_max"], "the maximum resets after each read"
