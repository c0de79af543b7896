"""Health and the OpenAPI document (SPEC A 3.9, 5)."""

from __future__ import annotations

from aiohttp import web

from apiary import __version__
from apiary.server.routing import Route
from apiary.server.state import app_state


async def health(request: web.Request) -> web.Response:
    state = app_state(request)
    live, with_colony = state.sessions.live_counts()   # parked sessions count as live (SPEC C.6)
    counts = {"sessions": live, "agents_loaded": with_colony}
    try:
        await state.deps.stores.ping()
    except Exception as exc:
        return web.json_response({"status": "unavailable", "error": str(exc), **counts}, status=503)
    return web.json_response({"status": "ok", **counts, "version": __version__})


async def openapi(request: web.Request) -> web.Response:
    from apiary.server.openapi import build_openapi
    from apiary.server.routes import ALL_ROUTES

    return web.json_response(build_openapi(ALL_ROUTES))


async def usage(request: web.Request) -> web.Response:
    from apiary.server.state import live_session

    session = await live_session(request)
    colony = session.colony.budget.usage() if session.colony is not None else None
    return web.json_response({"session": session.budget.usage(), "colony": colony})


ROUTES = [
    Route("GET", "/api/sessions/{session_id}/usage", usage, "Tokens, money and time used, with the limits"),
    Route("GET", "/api/health", health, "Liveness and storage health"),
    Route("GET", "/api/openapi.json", openapi, "This document"),
]
