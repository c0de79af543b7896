"""The browser-bridge status a web client polls (SPEC C.5). apiary has no browser bridge."""

from __future__ import annotations

import asyncio

from aiohttp import web

from apiary.server.routing import Route
from apiary.server.sse import KEEPALIVE, SSE_HEADERS
from apiary.server.state import app_state

STATUS = {"bridge": False, "connected": False}
POLL_S = 0.25


async def status(request: web.Request) -> web.Response:
    return web.json_response(STATUS)


async def status_stream(request: web.Request) -> web.StreamResponse:
    """Keepalives only, until the client goes away or the server shuts down."""
    state = app_state(request)
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    quiet = 0.0
    try:
        await response.write(b"retry: 3000\n\n")
        while not state.bus.closed:
            await asyncio.sleep(POLL_S)
            quiet += POLL_S
            if quiet >= state.settings.server.keepalive_s:
                await response.write(KEEPALIVE)
                quiet = 0.0
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


ROUTES = [
    Route("GET", "/api/browser/status", status, "Browser bridge status (apiary has none)"),
    Route("GET", "/api/browser/status/stream", status_stream, "SSE keepalives about the browser bridge",
          stream=True),
]
