"""Task lists (SPEC C.3): ``GET /api/tasks/{task_list_id}``.

A list is the ``tasks.json`` document that the queen's task-list tools write beside what it belongs
to, as in the reference layout: ``colony:<c>`` in ``colonies/<c>/``, ``session:<agent>:<sid>`` in the
queen session's folder. The route reads it when it is there; apiary's queen has no task-list tools
yet, so today every list is absent and every id gets the 404 of C.3.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from apiary.core.errors import NotFound
from apiary.core.jsonfile import read_json
from apiary.core.safety import COLONY_NAME, is_safe_segment
from apiary.server.routing import Route
from apiary.server.state import AppState, app_state

DOC_NAME: Final = "tasks.json"
STATUSES: Final = ("pending", "in_progress", "completed")
TASK_FIELDS: Final[dict[str, Any]] = {"subject": "", "description": "", "active_form": None, "owner": None,
                                      "status": "pending", "blocks": [], "blocked_by": [], "metadata": {},
                                      "created_at": None, "updated_at": None}


def list_doc_path(state: AppState, task_list_id: str) -> tuple[Path, str] | None:
    """Where the list's document lives and the role it has; None for an id naming nothing apiary holds."""
    kind, _, rest = task_list_id.partition(":")
    if kind == "colony" and is_safe_segment(rest) and COLONY_NAME.match(rest):
        return state.deps.layout.colony_dir(rest) / DOC_NAME, "template"
    if kind == "session":
        _agent, _, session_id = rest.partition(":")
        stored = state.sessions.stored(session_id) if is_safe_segment(session_id) else None
        if stored is not None:
            return stored.dir / DOC_NAME, "session"
    return None


def _task(raw: dict[str, Any]) -> dict[str, Any]:
    task = {"id": raw.get("id"), **{k: raw.get(k, default) for k, default in TASK_FIELDS.items()}}
    if task["status"] not in STATUSES:
        task["status"] = "pending"
    return task


def read_list(path: Path, role: str, task_list_id: str) -> dict[str, Any] | None:
    doc = read_json(path)
    if not isinstance(doc, dict):
        return None
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else None
    if meta is not None and meta.get("role") in ("session", "template"):
        role = meta["role"]
    tasks = [_task(t) for t in doc.get("tasks") or [] if isinstance(t, dict)]
    return {"task_list_id": task_list_id, "role": role, "meta": meta, "tasks": tasks}


async def get_task_list(request: web.Request) -> web.Response:
    task_list_id = request.match_info["task_list_id"]
    state = app_state(request)
    found = list_doc_path(state, task_list_id)
    body = await asyncio.to_thread(read_list, *found, task_list_id) if found is not None else None
    if body is None:
        raise NotFound(f"Task list '{task_list_id}' not found", task_list_id=task_list_id, tasks=[])
    return web.json_response(body)


ROUTES = [
    Route("GET", "/api/tasks/{task_list_id}", get_task_list, "A task list of a queen session or a colony"),
]
