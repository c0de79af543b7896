"""Session routes (SPEC A 3.2)."""

from __future__ import annotations

from aiohttp import web

from apiary.core.errors import NotFound
from apiary.core.safety import require_safe_segment
from apiary.server.body import optional, read_body
from apiary.server.routing import STR, Route, obj
from apiary.server.state import app_state, live_session
from apiary.sessions.session import Session

CREATE_FIELDS = ("agent_path", "agent_id", "session_id", "model", "initial_prompt", "queen_resume_from",
                 "queen_name", "initial_phase", "worker_name")


def session_detail(session: Session) -> dict[str, object]:
    body = session.to_json()
    colony = session.colony
    if colony is not None:
        body["entry_points"] = colony.entry_points_json()
        body["colonies"] = [colony.name]
        body["graphs"] = [colony.name]
    return body


async def create_session(request: web.Request) -> web.Response:
    state = app_state(request)
    body = await read_body(request)
    fields = {name: optional(body, name, str) for name in CREATE_FIELDS}
    if fields["session_id"] is not None:
        require_safe_segment(fields["session_id"])
    if fields["agent_path"] is not None:
        from apiary.server.routes.colony import open_colony_session

        session = await open_colony_session(state, fields)
        return web.json_response(session_detail(session), status=201)
    session = await state.sessions.create(
        queen_id=fields["queen_name"], session_id=fields["session_id"], model=fields["model"],
        initial_prompt=fields["initial_prompt"], initial_phase=fields["initial_phase"],
        resume_from=fields["queen_resume_from"])
    return web.json_response(session_detail(session), status=201)


async def list_sessions(request: web.Request) -> web.Response:
    return web.json_response({"sessions": app_state(request).sessions.live_json()})


async def history(request: web.Request) -> web.Response:
    return web.json_response({"sessions": app_state(request).sessions.history()})


async def delete_history(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    await app_state(request).sessions.delete_stored(session_id)
    return web.json_response({"deleted": session_id})


async def get_session(request: web.Request) -> web.Response:
    manager = app_state(request).sessions
    session_id = request.match_info["session_id"]
    session = await manager.find_live(session_id)   # a parked session comes back (SPEC C.6)
    if session is not None:
        return web.json_response(session_detail(session))
    stored = manager.stored(session_id)
    if stored is None:
        raise NotFound(f"Session '{session_id}' not found")
    return web.json_response(manager.cold_shape(stored))


async def end_session(request: web.Request) -> web.Response:
    manager = app_state(request).sessions
    session_id = request.match_info["session_id"]
    stored = manager.stored(session_id)
    if manager.loaded(session_id) is None and (stored is None or stored.meta().get("ended_at")):
        raise NotFound(f"Session '{session_id}' not found")
    await manager.end(session_id)
    return web.json_response({"session_id": session_id, "stopped": True})


async def stats(request: web.Request) -> web.Response:
    session = await live_session(request)
    return web.json_response(session.colony.stats() if session.colony else {})


async def entry_points(request: web.Request) -> web.Response:
    session = await live_session(request)
    return web.json_response({"entry_points": session.colony.entry_points_json() if session.colony else []})


async def colonies(request: web.Request) -> web.Response:
    session = await live_session(request)
    return web.json_response({"colonies": [session.colony.name] if session.colony else []})


async def graphs(request: web.Request) -> web.Response:
    session = await live_session(request)
    return web.json_response({"graphs": [session.colony.name] if session.colony else []})


CREATE_BODY = obj(**{name: STR for name in CREATE_FIELDS})
SID = "/api/sessions/{session_id}"
ROUTES = [
    Route("POST", "/api/sessions", create_session, "Create a queen session, or open a colony", CREATE_BODY,
          responses={201: "session created"}),
    Route("GET", "/api/sessions", list_sessions, "List live sessions"),
    Route("GET", "/api/sessions/history", history, "List stored queen sessions, most recently active first"),
    Route("DELETE", "/api/sessions/history/{session_id}", delete_history, "Delete a stored session"),
    Route("GET", SID, get_session, "A live session, or the cold shape of a stored one"),
    Route("DELETE", SID, end_session, "End a live session"),
    Route("GET", SID + "/stats", stats, "Runtime statistics of the loaded colony"),
    Route("GET", SID + "/entry-points", entry_points, "Entry points of the loaded colony"),
    Route("GET", SID + "/colonies", colonies, "Graph ids of the loaded colony"),
    Route("GET", SID + "/graphs", graphs, "Graph ids of the loaded colony (alias)"),
]
