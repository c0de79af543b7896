"""Helpers for the part C tests (imported as ``from webclient_helpers import ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from apiary.server.state import APP_STATE, AppState
from helpers import (
    create_session,
    wait_for_event,
    wait_until,  # noqa: F401  (shared; re-exported)
)


def state(client: TestClient) -> AppState:
    return client.server.app[APP_STATE]


def home_of(client: TestClient) -> Path:
    return state(client).settings.home_dir


async def get_json(client: TestClient, path: str, **params: str) -> tuple[int, Any]:
    resp = await client.get(path, params=params or None)
    return resp.status, await resp.json()


async def waiting_session(client: TestClient, **body: Any) -> str:
    """A new session whose queen has answered her first message and waits."""
    sid = (await create_session(client, **body))["session_id"]
    await wait_for_event(client, sid, "client_input_requested")
    return sid


async def spawn_colony(client: TestClient, sid: str, name: str = "c", tasks: list[dict[str, Any]] | None = None
                       ) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/colony-spawn", json={"colony_name": name, "tasks": tasks or []})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def open_colony(client: TestClient, colony_path: str) -> dict[str, Any]:
    resp = await client.post("/api/sessions", json={"agent_path": colony_path})
    assert resp.status == 201, await resp.text()
    return await resp.json()


