"""Queen profiles and the queen-session routes (SPEC A 3.4, 3.9; C.1)."""

from __future__ import annotations

from aiohttp import web

from apiary.core.errors import NotFound
from apiary.server.body import optional, read_body, required_str
from apiary.server.routing import STR, Route, obj
from apiary.server.state import app_state
from apiary.sessions.manager import check_phase, require_profile
from apiary.sessions.profiles import PROFILES, classify


def _answer(session_id: str, queen_id: str, status: str) -> web.Response:
    return web.json_response({"session_id": session_id, "queen_id": queen_id, "status": status})


async def profiles(request: web.Request) -> web.Response:
    return web.json_response({"queens": [p.to_json() for p in PROFILES]})


async def queen_session(request: web.Request) -> web.Response:
    """This queen's live session, else her most recent stored one, else a new one."""
    state = app_state(request)
    body = await read_body(request)
    prompt = optional(body, "initial_prompt", str)
    phase = optional(body, "initial_phase", str)
    check_phase(phase)
    profile = require_profile(request.match_info["queen_id"])
    manager = state.sessions
    newest = manager.newest_live_without_colony(profile.id)
    if newest is not None:
        return _answer(newest, profile.id, "live")
    for item in manager.history():
        stored = manager.stored(item["session_id"])
        if stored is None or item["queen_id"] != profile.id or item["agent_path"]:
            continue
        session = await manager.create(queen_id=profile.id, resume_from=stored.session_id, initial_phase=phase)
        return _answer(session.id, profile.id, "resumed")
    session = await manager.create(queen_id=profile.id, initial_prompt=prompt, initial_phase=phase)
    return _answer(session.id, profile.id, "created")


async def new_session(request: web.Request) -> web.Response:
    state = app_state(request)
    body = await read_body(request)
    prompt = optional(body, "initial_prompt", str)
    phase = optional(body, "initial_phase", str) or "independent"
    check_phase(phase)
    profile = require_profile(request.match_info["queen_id"])
    session = await state.sessions.create(queen_id=profile.id, initial_prompt=prompt, initial_phase=phase)
    return _answer(session.id, profile.id, "created")


async def select_session(request: web.Request) -> web.Response:
    state = app_state(request)
    body = await read_body(request)
    session_id = required_str(body, "session_id")
    profile = require_profile(request.match_info["queen_id"])
    manager = state.sessions
    live = await manager.find_live(session_id)
    if live is not None:
        if live.queen_id != profile.id:
            raise NotFound(f"Session '{session_id}' not found for queen '{profile.id}'")
        return _answer(session_id, profile.id, "live")
    stored = manager.stored(session_id)
    if stored is None or stored.meta().get("queen_id", stored.queen_id) != profile.id:
        raise NotFound(f"Session '{session_id}' not found for queen '{profile.id}'")
    phase = "working" if stored.meta().get("agent_path") else "independent"
    await manager.create(queen_id=profile.id, resume_from=session_id, initial_phase=phase)
    return _answer(session_id, profile.id, "resumed")


async def classify_message(request: web.Request) -> web.Response:
    body = await read_body(request)
    return web.json_response({"queen_id": classify(required_str(body, "message"))})


QUEEN_BODY = obj(initial_prompt=STR, initial_phase=STR)
ROUTES = [
    Route("GET", "/api/queen/profiles", profiles, "The queen profiles"),
    Route("POST", "/api/queen/{queen_id}/session", queen_session, "Open this queen's current session",
          QUEEN_BODY),
    Route("POST", "/api/queen/{queen_id}/session/new", new_session, "Start a new session with this queen",
          QUEEN_BODY),
    Route("POST", "/api/queen/{queen_id}/session/select", select_session, "Reopen one of this queen's sessions",
          obj(session_id=STR)),
    Route("POST", "/api/messages/classify", classify_message, "Pick the queen for a message", obj(message=STR)),
]
