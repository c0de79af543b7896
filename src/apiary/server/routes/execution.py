"""Execution routes over a session's loaded colony (SPEC A 2.1-2.2, 2.5-2.9)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apiary.core.errors import InvalidRequest, NoColonyLoaded, NotFound
from apiary.core.safety import require_safe_segment
from apiary.server.body import optional, read_body, required_str
from apiary.server.routing import OBJ, STR, Route, obj
from apiary.server.state import live_session
from apiary.sessions.session import Session

REPLAY_MODES = ("rerun", "recorded")


async def _colony_session(request: web.Request) -> tuple[Session, Any]:
    session = await live_session(request)
    if session.colony is None:
        raise NoColonyLoaded()
    return session, session.colony


async def trigger(request: web.Request) -> web.Response:
    session, colony = await _colony_session(request)
    await colony.check_credentials()
    body = await read_body(request)
    entry_point = optional(body, "entry_point_id", str, "default")
    input_data = optional(body, "input_data", dict, {})
    session_state = dict(optional(body, "session_state", dict, {}))
    for key in ("resume_session_id", "resume_from_checkpoint", "run_id"):
        if session_state.get(key) is not None:
            require_safe_segment(session_state[key])
    if not colony.has_entry_point(entry_point):
        raise InvalidRequest(f"Entry point '{entry_point}' not found")
    session_state.setdefault("resume_session_id", session.id)
    execution_id = await colony.trigger(entry_point, input_data, session_state)
    session.queen.cancel_turn()
    await session.switch_phase("working")
    return web.json_response({"execution_id": execution_id})


async def inject(request: web.Request) -> web.Response:
    _, colony = await _colony_session(request)
    body = await read_body(request)
    node_id = required_str(body, "node_id")
    content = optional(body, "content", str, "")
    colony_id = optional(body, "colony_id", str)
    request_id = optional(body, "request_id", str)
    delivered = colony.inject(node_id, content, colony_id=colony_id, request_id=request_id)
    return web.json_response({"delivered": delivered})


async def goal_progress(request: web.Request) -> web.Response:
    _, colony = await _colony_session(request)
    return web.json_response(await colony.goal_progress())


async def _checkpoint_target(request: web.Request, *, need_state: bool) -> tuple[Session, Any, dict[str, Any]]:
    session, colony = await _colony_session(request)
    body = await read_body(request)
    worker_session = required_str(body, "session_id")
    checkpoint_id = optional(body, "checkpoint_id", str)
    if not need_state and not (checkpoint_id or "").strip():
        raise InvalidRequest("checkpoint_id is required")
    mode = body.get("mode")
    if not need_state and mode is not None and mode not in REPLAY_MODES:
        raise InvalidRequest("mode must be one of: rerun, recorded")
    require_safe_segment(worker_session)
    if checkpoint_id:
        require_safe_segment(checkpoint_id)
    stored_state = None
    if need_state:
        if not await colony.has_worker_session(worker_session):
            raise NotFound("Session not found")
        stored_state = await colony.read_worker_state(worker_session)
        if not checkpoint_id:
            raise InvalidRequest("checkpoint_id is required; non-checkpoint resume is no longer supported")
    checkpoint = await colony.find_checkpoint(worker_session, checkpoint_id)
    if checkpoint is None:
        raise NotFound("Checkpoint not found")
    if not colony.has_entry_point(None):
        raise InvalidRequest("No entry points available")
    target = {"session_id": worker_session, "checkpoint_id": checkpoint_id, "checkpoint": checkpoint,
              "state": stored_state, "mode": mode or "rerun"}
    return session, colony, target


async def resume(request: web.Request) -> web.Response:
    _, colony, target = await _checkpoint_target(request, need_state=True)
    execution_id = await colony.resume(target["session_id"], target["checkpoint"], target["state"])
    return web.json_response({"execution_id": execution_id, "resumed_from": target["session_id"],
                              "checkpoint_id": target["checkpoint_id"]})


async def replay(request: web.Request) -> web.Response:
    _, colony, target = await _checkpoint_target(request, need_state=False)
    execution_id = await colony.replay(target["session_id"], target["checkpoint"], mode=target["mode"])
    return web.json_response({"execution_id": execution_id, "replayed_from": target["session_id"],
                              "checkpoint_id": target["checkpoint_id"], "mode": target["mode"]})


async def pause(request: web.Request) -> web.Response:
    session, colony = await _colony_session(request)
    cancelled, cancelling = await colony.pause()
    await session.switch_phase("reviewing")
    return web.json_response({"stopped": bool(cancelled) and not cancelling, "cancelled": cancelled,
                              "cancelling": cancelling, "timers_paused": True})


async def stop(request: web.Request) -> web.Response:
    session, colony = await _colony_session(request)
    body = await read_body(request)
    execution_id = required_str(body, "execution_id")
    outcome = await colony.cancel(execution_id, "Execution stopped by user")
    if outcome == "not_found":
        return web.json_response({"stopped": False, "error": "Execution not found"}, status=404)
    if outcome == "cancelling":
        return web.json_response({"stopped": False, "cancelling": True, "execution_id": execution_id}, status=202)
    session.queen.cancel_turn()
    await session.switch_phase("reviewing")
    return web.json_response({"stopped": True, "cancelling": False, "execution_id": execution_id})


SID = "/api/sessions/{session_id}"
CHECKPOINT_BODY = obj(session_id=STR, checkpoint_id=STR)
ROUTES = [
    Route("POST", SID + "/trigger", trigger, "Start a worker execution",
          obj(entry_point_id=STR, input_data=OBJ, session_state=OBJ)),
    Route("POST", SID + "/inject", inject, "Give input to a waiting worker node",
          obj(node_id=STR, content=STR, colony_id=STR, request_id=STR)),
    Route("GET", SID + "/goal-progress", goal_progress, "Progress of the colony's goal"),
    Route("POST", SID + "/resume", resume, "Continue a worker session from a checkpoint", CHECKPOINT_BODY),
    Route("POST", SID + "/replay", replay, "Re-run a worker session from a checkpoint",
          obj(session_id=STR, checkpoint_id=STR, mode={"type": "string", "enum": list(REPLAY_MODES)})),
    Route("POST", SID + "/pause", pause, "Pause every worker execution and the timers"),
    Route("POST", SID + "/stop", stop, "Cancel one execution", obj(execution_id=STR),
          responses={200: "stopped", 202: "still stopping after the grace period"}),
]
