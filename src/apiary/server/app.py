"""The aiohttp application: storage, bus and session manager wired together, plus shutdown order.

Shutdown, in order: ``on_shutdown`` closes the bus so every SSE handler returns at once; then the
cleanup context stops every session (runs are cancelled to a checkpoint) and closes storage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from apiary.bus.bus import EventBus
from apiary.core.clock import Clock, SystemClock
from apiary.core.config import Settings
from apiary.core.ids import IdFactory, RandomIds
from apiary.core.layout import Layout
from apiary.core.tasks import TaskOwner
from apiary.llm.registry import make_llm
from apiary.server.activity import session_use_middleware
from apiary.server.errors import Handler, error_middleware
from apiary.server.routes import ALL_ROUTES
from apiary.server.routes.debug import LAG_MONITOR, LoopLagMonitor
from apiary.server.security import same_origin_middleware, token_middleware
from apiary.server.state import APP_STATE, AppState
from apiary.sessions.deps import LLMFactory, SessionDeps
from apiary.sessions.files import SessionIndex
from apiary.sessions.manager import SessionManager
from apiary.storage import open_stores
from apiary.storage.base import Stores

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


async def build_app(settings: Settings, *, stores: Stores | None = None, llm_factory: LLMFactory | None = None,
                    clock: Clock | None = None, ids: IdFactory | None = None) -> web.Application:
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    clock = clock or SystemClock()
    stores = stores or await open_stores(settings.database_url, home=home,
                                           listen_url=settings.database_listen_url)
    layout = Layout(home)
    deps = SessionDeps(settings=settings, layout=layout, stores=stores,
                       bus=EventBus(stores.events, clock, queue_size=settings.server.sse_queue_size,
                                    remote=stores.shared),
                       clock=clock, ids=ids or RandomIds(),
                       make_llm=llm_factory or (lambda spec: make_llm(spec, settings)),
                       tasks=TaskOwner("sessions"), index=SessionIndex(layout))
    token = settings.server.api_token.get_secret_value() if settings.server.api_token else None
    app = web.Application(client_max_size=settings.server.max_body_bytes,
                          middlewares=[same_origin_middleware, token_middleware(token), error_middleware,
                                       session_use_middleware, ui_middleware])
    stores.add_notification_callback(_events_from_elsewhere(deps.bus))
    app[APP_STATE] = AppState(settings=settings, deps=deps, sessions=SessionManager(deps))
    for route in ALL_ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app.on_shutdown.append(_close_streams)
    app.cleanup_ctx.append(_lifecycle)
    monitor = LoopLagMonitor()
    app[LAG_MONITOR] = monitor
    app.cleanup_ctx.append(monitor.lifecycle)
    return app


def _events_from_elsewhere(bus: EventBus) -> Callable[[str, str | None], None]:
    def on_notification(channel: str, payload: str | None) -> None:
        if channel == "apiary_events" or payload is None:
            bus.on_notification(channel, payload)

    return on_notification


async def _close_streams(app: web.Application) -> None:
    await app[APP_STATE].deps.bus.close()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[APP_STATE]
    from apiary.sessions.recovery import recover_at_startup

    await recover_at_startup(state.deps)
    state.sessions.parking.start()   # parks idle live sessions (SPEC C.6)
    workers = _embedded_workers(state.deps)
    yield
    if workers is not None:   # its executions are given back at a checkpoint for other workers
        stopping, task = workers
        stopping.set()
        await asyncio.gather(task, return_exceptions=True)
    await state.sessions.aclose()
    await state.deps.tasks.aclose(state.settings.server.shutdown_timeout_s)
    await state.deps.stores.aclose()


def _embedded_workers(deps: SessionDeps) -> tuple[asyncio.Event, asyncio.Task[None]] | None:
    """With PostgreSQL the API server also runs executions itself unless ``embedded_workers`` is 0."""
    count = deps.settings.colonies.embedded_workers
    if deps.stores.coordination is None or count <= 0:
        return None
    from apiary.colonies.worker_service import WorkerService

    service = WorkerService(settings=deps.settings, layout=deps.layout, stores=deps.stores, bus=deps.bus,
                            clock=deps.clock, ids=deps.ids, make_llm=deps.make_llm, concurrency=count)
    stopping = asyncio.Event()
    return stopping, asyncio.create_task(service.run(stopping), name="embedded-workers")


@web.middleware
async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Paths outside /api/ serve the web UI; unknown ones fall back to index.html."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if request.path.startswith("/api/") or request.method not in ("GET", "HEAD"):
            raise
        return _static_file(request.path)


def _static_file(path: str) -> web.StreamResponse:
    root = STATIC.resolve()
    candidate = (root / path.lstrip("/")).resolve()
    if candidate.is_file() and root in candidate.parents:
        return web.FileResponse(candidate)
    return web.FileResponse(root / "index.html", headers={"Cache-Control": "no-cache"})
