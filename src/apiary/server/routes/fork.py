"""Colony spawn and compact-and-fork (SPEC A 2.12, 2.13)."""

from __future__ import annotations

from aiohttp import web

from apiary.core.errors import InvalidRequest, Unavailable
from apiary.core.safety import COLONY_NAME, require_safe_segment
from apiary.server.body import optional, read_body, required_str
from apiary.server.routing import LIST, STR, Route, obj
from apiary.server.state import app_state, live_session
from apiary.sessions.fork import compact_and_fork, spawn_colony
from apiary.storage.sqlite.progress_db import validate_tasks


async def colony_spawn(request: web.Request) -> web.Response:
    state = app_state(request)
    session = await live_session(request)
    if not session.queen.is_running:
        raise Unavailable("Queen is not running in this session.")
    body = await read_body(request)
    name = required_str(body, "colony_name").strip()
    if not COLONY_NAME.match(name):
        raise InvalidRequest("colony_name must be lowercase alphanumeric with underscores")
    require_safe_segment(name)  # colony names also pass the safe-segment rule, with its length limit (A 1.3)
    task = optional(body, "task", str, "")
    tasks = optional(body, "tasks", list, [])
    validate_tasks(tasks)
    result = await spawn_colony(state.sessions, session, colony_name=name, task=task, tasks=tasks)
    return web.json_response(result)


async def compact_fork(request: web.Request) -> web.Response:
    state = app_state(request)
    session = await live_session(request)
    return web.json_response(await compact_and_fork(state.sessions, session))


SID = "/api/sessions/{session_id}"
TASK = obj(goal=STR, id=STR, seq={"type": "integer"}, priority={"type": "integer"}, payload={},
           max_retries={"type": "integer"}, parent_task_id=STR, steps=LIST, sop_items=LIST)
ROUTES = [
    Route("POST", SID + "/colony-spawn", colony_spawn, "Fork the queen session into a colony",
          obj(colony_name=STR, task=STR, tasks={**LIST, "items": TASK})),
    Route("POST", SID + "/compact-and-fork", compact_fork, "A new session with the same queen, history compacted"),
]
