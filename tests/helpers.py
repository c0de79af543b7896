"""Test helpers shared by the HTTP tests (imported as ``from helpers import ...``).

They live outside conftest.py because several test folders have their own conftest.py, and a
plain ``from conftest import`` then finds whichever conftest module pytest imported last.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient


async def read_sse(resp: ClientResponse, *, until: Callable[[dict[str, Any]], bool], timeout: float = 10.0
                   ) -> list[dict[str, Any]]:
    """Read SSE frames (as dicts with ``_id`` from the id: line) until ``until(frame)`` is true."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    async def reader() -> None:
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                current["_id"] = int(line[4:])
            elif line.startswith("data: "):
                current.update(json.loads(line[6:]))
            elif line == "" and current:
                frames.append(dict(current))
                current.clear()
                if until(frames[-1]):
                    return

    await asyncio.wait_for(reader(), timeout)
    return frames


async def create_session(client: TestClient, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/sessions", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def wait_for_event(client: TestClient, session_id: str, event_type: str, *, after: int = 0,
                         timeout: float = 10.0, count: int = 1) -> list[dict[str, Any]]:
    """Poll the event history until ``count`` events of ``event_type`` with id > after exist."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/api/sessions/{session_id}/events/history", params={"after": str(after)})
        events = [e for e in (await resp.json())["events"] if e["type"] == event_type]
        if len(events) >= count:
            return events
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {event_type} after {after} within {timeout}s")
        await asyncio.sleep(0.02)


async def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
