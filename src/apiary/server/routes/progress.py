"""Colony progress from progress.db (SPEC A 3.7) and worker sessions with checkpoints (A 3.8)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from apiary.colonies.views import checkpoints_json, worker_sessions_json
from apiary.core.errors import Conflict, InvalidRequest, NoColonyLoaded, NotFound
from apiary.core.safety import COLONY_NAME, require_safe_segment
from apiary.server.routing import Route
from apiary.server.sse import poll_stream
from apiary.server.state import app_state, live_session
from apiary.storage.sqlite import progress_db


def _colony_name(request: web.Request) -> str:
    name = require_safe_segment(request.match_info["colony_name"])
    if not COLONY_NAME.match(name):
        raise InvalidRequest("Invalid path parameter")
    return name


def colony_db(request: web.Request) -> Path:
    name = _colony_name(request)
    deps = app_state(request).deps
    if deps.stores.coordination is not None:
        raise Conflict(f"Colony '{name}' keeps its tasks in PostgreSQL (table apiary_tasks), not in a "
                       f"progress.db: use GET /api/colonies/{name}/progress/snapshot")
    colony_dir = deps.layout.colony_dir(name)
    db = colony_dir / "data" / "progress.db"
    if not colony_dir.is_dir() or not db.is_file():
        raise NotFound(f"Colony '{name}' not found")
    return db


def read_snapshot(db: Path, limit: int) -> dict[str, Any]:
    conn = progress_db.connect(db)
    try:
        snap = progress_db.progress_snapshot(conn, limit)
    finally:
        conn.close()
    return {"colony_name": db.parent.parent.name, "tasks": snap["tasks"], "items": snap["items"]}


def _limit(request: web.Request) -> int:
    try:
        return max(1, min(int(request.query.get("limit", "500")), 500))
    except ValueError:
        return 500


async def _shared_snapshot(request: web.Request, name: str, limit: int) -> dict[str, Any]:
    """The same answer from the shared queue (PostgreSQL)."""
    deps = app_state(request).deps
    colony_dir = deps.layout.colony_dir(name)
    queue = deps.stores.task_queue(name, colony_dir, lease_s=deps.settings.colonies.stale_claim_s)
    try:
        snap = await queue.progress(limit)
    finally:
        await queue.close()
    if not snap["items"] and not colony_dir.is_dir():
        raise NotFound(f"Colony '{name}' not found")
    return {"colony_name": name, "tasks": snap["tasks"], "items": snap["items"]}


async def snapshot(request: web.Request) -> web.Response:
    if app_state(request).deps.stores.coordination is not None:
        return web.json_response(await _shared_snapshot(request, _colony_name(request), _limit(request)))
    db = colony_db(request)
    return web.json_response(await asyncio.to_thread(read_snapshot, db, _limit(request)))


def _version(db: Path) -> tuple[float, ...]:
    stamps = []
    for suffix in ("", "-wal"):
        try:
            st = os.stat(f"{db}{suffix}")
            stamps += [st.st_mtime, st.st_size]
        except OSError:
            stamps += [0.0, 0.0]
    return tuple(stamps)


async def stream(request: web.Request) -> web.StreamResponse:
    """A snapshot at connect and after each change of the queue, at most once a second."""
    state = app_state(request)
    limit = _limit(request)
    if state.deps.stores.coordination is not None:
        name = _colony_name(request)
        await _shared_snapshot(request, name, limit)   # 404 before the stream opens

        async def shared() -> str:
            return json.dumps(await _shared_snapshot(request, name, limit))

        return await poll_stream(request, snapshot=shared, closed=lambda: state.bus.closed, period_s=1.0,
                                 keepalive_s=state.settings.server.keepalive_s)
    db = colony_db(request)
    seen: list[Any] = [None, ""]

    async def snapshot() -> str:
        version = _version(db)
        if version != seen[0]:   # read the database only when its files changed
            seen[0] = version
            seen[1] = json.dumps(await asyncio.to_thread(read_snapshot, db, limit))
        return str(seen[1])

    return await poll_stream(request, snapshot=snapshot, closed=lambda: state.bus.closed, period_s=1.0,
                             keepalive_s=state.settings.server.keepalive_s)


async def worker_sessions(request: web.Request) -> web.Response:
    session = await live_session(request)
    if session.colony is None:
        raise NoColonyLoaded()
    return web.json_response(await worker_sessions_json(session.colony))


async def checkpoints(request: web.Request) -> web.Response:
    session = await live_session(request)
    if session.colony is None:
        raise NoColonyLoaded()
    worker_session_id = require_safe_segment(request.match_info["worker_session_id"])
    files = await session.colony.worker_session(worker_session_id)
    if files is None:
        raise NotFound("Session not found")
    return web.json_response(await checkpoints_json(files))


ROUTES = [
    Route("GET", "/api/colonies/{colony_name}/progress/snapshot", snapshot, "Tasks of a colony's queue"),
    Route("GET", "/api/colonies/{colony_name}/progress/stream", stream, "SSE snapshots of a colony's queue",
          stream=True),
    Route("GET", "/api/sessions/{session_id}/worker-sessions", worker_sessions, "Worker sessions of the colony"),
    Route("GET", "/api/sessions/{session_id}/worker-sessions/{worker_session_id}/checkpoints", checkpoints,
          "Checkpoints of a worker session"),
]
