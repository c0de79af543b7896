"""The colony list and deleting a colony (SPEC C.1, C.5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from apiary.core.errors import InvalidRequest, NotFound
from apiary.core.safety import COLONY_NAME, is_safe_segment
from apiary.server.body import read_body, required_str
from apiary.server.routing import STR, Route, obj
from apiary.server.state import AppState, app_state
from apiary.sessions.colony_catalog import delete_colony, discover


def colony_folder(state: AppState, agent_path: str) -> Path:
    """The colony folder ``agent_path`` names: a direct child of the colonies folder (400 otherwise)."""
    root = state.deps.layout.colonies.resolve()
    outside = InvalidRequest(f"agent_path must be a colony folder inside the colonies folder {root}")
    try:
        raw = Path(agent_path).expanduser()
        candidate = raw if raw.is_absolute() else root / raw
        path = candidate.parent.resolve() / candidate.name
    except (ValueError, RuntimeError, OSError):   # a NUL byte; ~user of no one; a symlink loop
        raise outside from None
    if path.parent != root or not is_safe_segment(path.name) or not COLONY_NAME.match(path.name) \
            or path.is_symlink():
        raise outside
    if not path.is_dir():
        raise NotFound(f"Agent not found: {agent_path}")
    return path


async def list_colonies(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(discover, app_state(request).deps.layout))


async def delete_agent(request: web.Request) -> web.Response:
    state = app_state(request)
    body = await read_body(request)
    path = colony_folder(state, required_str(body, "agent_path"))
    await delete_colony(state.sessions, path)
    return web.json_response({"deleted": str(path)})


ROUTES = [
    Route("GET", "/api/discover", list_colonies, "The colonies on disk, by category"),
    Route("DELETE", "/api/agents", delete_agent, "Delete a colony: its folder, queue and worker storage",
          obj(agent_path=STR)),
]
