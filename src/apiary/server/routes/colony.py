"""Opening and unloading a colony in a session (SPEC A 3.2), and the colony's workers (A 3.6)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from apiary.colonies.views import worker_json, workers_json
from apiary.core.errors import InvalidRequest, NoColonyLoaded, NotFound
from apiary.core.safety import require_safe_segment
from apiary.server.body import optional, read_body, required_str
from apiary.server.routing import STR, Route, obj
from apiary.server.sse import poll_stream
from apiary.server.state import AppState, app_state, live_session
from apiary.sessions.colony_loading import detach_colony, open_colony
from apiary.sessions.manager import check_phase, require_profile
from apiary.sessions.session import Session


def resolve_agent_path(state: AppState, agent_path: str) -> Path:
    root = state.deps.layout.colonies.resolve()
    try:
        raw = Path(agent_path).expanduser()
        path = (raw if raw.is_absolute() else root / raw).resolve()
    except (ValueError, RuntimeError, OSError):   # a NUL byte; ~user of no one; a symlink loop
        raise InvalidRequest(f"agent_path must lie inside the colonies folder {root}") from None
    if root not in path.parents:
        raise InvalidRequest(f"agent_path must lie inside the colonies folder {root}")
    try:
        found = path.is_dir()
    except OSError:                               # a name too long for the file system
        found = False
    if not found:
        raise NotFound(f"Agent not found: {agent_path}")
    return path


async def open_colony_session(state: AppState, fields: dict[str, Any]) -> Session:
    check_phase(fields.get("initial_phase"))
    if fields.get("queen_name"):
        require_profile(fields["queen_name"])
    for key in ("session_id", "queen_resume_from"):
        if fields.get(key) is not None:
            require_safe_segment(fields[key])
    path = resolve_agent_path(state, fields["agent_path"])
    return await open_colony(state.sessions, path, session_id=fields.get("session_id"),
                             resume_from=fields.get("queen_resume_from"), model=fields.get("model"),
                             queen_id=fields.get("queen_name"), initial_phase=fields.get("initial_phase"),
                             worker_name=fields.get("worker_name"))


async def load_colony(request: web.Request) -> web.Response:
    from apiary.server.routes.sessions import session_detail

    state = app_state(request)
    session = await live_session(request)
    body = await read_body(request)
    agent_path = required_str(body, "agent_path")
    model = optional(body, "model", str)
    optional(body, "colony_id", str)
    if session.colony is not None:
        raise_conflict(session)
    path = resolve_agent_path(state, agent_path)
    await open_colony(state.sessions, path, session_id=session.id, resume_from=None, model=model, queen_id=None,
                      initial_phase=None, worker_name=None)
    return web.json_response(session_detail(session))


def raise_conflict(session: Session) -> None:
    from apiary.core.errors import Conflict

    raise Conflict(f"Session '{session.id}' already has a colony loaded", colony_id=session.colony.name)


async def unload_colony(request: web.Request) -> web.Response:
    session = await live_session(request)
    await detach_colony(session)
    return web.json_response({"session_id": session.id, "colony_unloaded": True})


async def list_workers(request: web.Request) -> web.Response:
    session = await live_session(request)
    return web.json_response(workers_json(session.colony))


async def stop_worker(request: web.Request) -> web.Response:
    session = await live_session(request)
    worker_id = require_safe_segment(request.match_info["worker_id"])
    if session.colony is None:
        raise NoColonyLoaded()
    if worker_json(session.colony, worker_id) is None or worker_id not in session.colony.active():
        raise NotFound("Worker not found")
    outcome = await session.colony.cancel(worker_id, "Execution stopped by user")
    if outcome == "cancelling":
        return web.json_response({"worker_id": worker_id, "stopped": False, "cancelling": True}, status=202)
    if outcome == "not_found":
        raise NotFound("Worker not found")
    return web.json_response({"worker_id": worker_id, "stopped": True})


async def stop_all(request: web.Request) -> web.Response:
    session = await live_session(request)
    if session.colony is None:
        return web.json_response({"stopped": [], "cancelling": []})
    ids = list(session.colony.active())
    outcomes = await asyncio.gather(*(session.colony.cancel(i, "Execution stopped by user") for i in ids))
    return web.json_response({"stopped": [i for i, o in zip(ids, outcomes, strict=True) if o == "cancelled"],
                              "cancelling": [i for i, o in zip(ids, outcomes, strict=True) if o == "cancelling"]})


async def workers_stream(request: web.Request) -> web.StreamResponse:
    state = app_state(request)
    session = await live_session(request)

    async def snapshot() -> str:
        return json.dumps(workers_json(session.colony))

    return await poll_stream(request, snapshot=snapshot, closed=lambda: state.bus.closed, period_s=0.5,
                             keepalive_s=state.settings.server.keepalive_s, event="snapshot")


SID = "/api/sessions/{session_id}"
ROUTES = [
    Route("POST", SID + "/colony", load_colony, "Load a colony into the session",
          obj(agent_path=STR, colony_id=STR, model=STR)),
    Route("DELETE", SID + "/colony", unload_colony, "Unload the session's colony"),
    Route("GET", SID + "/workers", list_workers, "The colony's workers"),
    Route("POST", SID + "/workers/stop-all", stop_all, "Stop every worker"),
    Route("POST", SID + "/workers/{worker_id}/stop", stop_worker, "Stop one worker",
          responses={200: "stopped", 202: "still stopping after the grace period"}),
    Route("GET", SID + "/workers/stream", workers_stream, "SSE snapshots of the worker list", stream=True),
]
