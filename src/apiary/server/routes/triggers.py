"""The queen's triggers (SPEC A 3.5, B 12)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apiary.colonies.timers import QueenTrigger
from apiary.core.errors import Conflict, NotFound
from apiary.core.safety import require_safe_segment
from apiary.server.body import optional, read_body
from apiary.server.routing import OBJ, STR, Route, obj
from apiary.server.state import live_session
from apiary.sessions.session import Session


async def _trigger(request: web.Request) -> tuple[Session, QueenTrigger]:
    session = await live_session(request)
    trigger_id = require_safe_segment(request.match_info["trigger_id"])
    trig = session.colony.timers.get(trigger_id) if session.colony is not None else None
    if trig is None:
        raise NotFound(f"Trigger '{trigger_id}' not found")
    return session, trig


async def update(request: web.Request) -> web.Response:
    session, trig = await _trigger(request)
    body = await read_body(request)
    task = optional(body, "task", str)
    config: dict[str, Any] | None = optional(body, "trigger_config", dict)
    trig = await session.colony.timers.update(trig.id, task=task, config=config)
    return web.json_response({"trigger_id": trig.id, "task": trig.task, "trigger_config": trig.trigger_config})


async def activate(request: web.Request) -> web.Response:
    session, trig = await _trigger(request)
    started = await session.colony.timers.activate(trig.id)
    return web.json_response({"status": "activated" if started else "already_active", "trigger_id": trig.id})


async def deactivate(request: web.Request) -> web.Response:
    session, trig = await _trigger(request)
    stopped = await session.colony.timers.deactivate(trig.id)
    return web.json_response({"status": "deactivated" if stopped else "already_inactive", "trigger_id": trig.id})


async def run_once(request: web.Request) -> web.Response:
    session, trig = await _trigger(request)
    if session.colony is None or not session.queen.is_running:
        raise Conflict("Trigger cannot run: no colony loaded or the queen is not running")
    await session.colony.timers.fire(trig, forced=True)
    return web.json_response({"status": "fired", "trigger_id": trig.id})


TID = "/api/sessions/{session_id}/triggers/{trigger_id}"
ROUTES = [
    Route("PATCH", TID, update, "Change a trigger's task or config", obj(task=STR, trigger_config=OBJ)),
    Route("POST", TID + "/activate", activate, "Start a trigger"),
    Route("POST", TID + "/deactivate", deactivate, "Stop a trigger"),
    Route("POST", TID + "/run", run_once, "Fire a trigger once now"),
]
