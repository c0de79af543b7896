"""Fixtures for driving AgentLoop directly; every loop started here is stopped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from loop_harness import LoopRun

from apiary.storage.memory import MemoryStores


@pytest.fixture
async def run_loop() -> AsyncIterator[Callable[..., LoopRun]]:
    runs: list[LoopRun] = []

    def factory(llm: Any, *, stores: Any = None, start: bool = True, **kwargs: Any) -> LoopRun:
        run = LoopRun(stores if stores is not None else MemoryStores(), llm, **kwargs)
        runs.append(run)
        return run.start() if start else run

    yield factory
    for run in runs:
        await run.stop()
