"""Health and the OpenAPI document (SPEC A 3.9, 5)."""

from __future__ import annotations

from aiohttp import web

from apiary import __version__
from apiary.server.routing import Route
from apiary.server.state import app_state


async def health(request: web.Request) -> web.Response:
    state = app_state(request)
    live = state.sessions.live.values()
    counts = {"sessions": len(state.sessions.live), "agents_loaded": sum(1 for s in live if s.colony is not None)}
    try:
        await state.deps.stores.ping()
    except Exception as exc:
        return web.json_response({"status": "unavailable", "error": str(exc), **counts}, status=503)
    return web.json_response({"status": "ok", **counts, "version": __version__})


async def openapi(request: web.Request) -> web.Response:
    from apiary.server.openapi import build_openapi
    from apiary.server.routes import ALL_ROUTES

    return web.json_response(build_openapi(ALL_ROUTES))


ROUTES = [
    Route("GET", "/api/health", health, "Liveness and storage health"),
    Route("GET", "/api/openapi.json", openapi, "This document"),
]
