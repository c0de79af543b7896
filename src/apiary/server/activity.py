"""Marks the session a request names as in use while the request runs, so it is never parked under it
(SPEC C.6). Streams count for as long as they are open."""

from __future__ import annotations

from aiohttp import web

from apiary.server.errors import Handler
from apiary.server.state import APP_STATE


@web.middleware
async def session_use_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    session_id = request.match_info.get("session_id")
    if session_id is None:
        return await handler(request)
    with request.app[APP_STATE].sessions.parking.in_use(session_id):
        return await handler(request)
