"""The aiohttp application: storage, bus and session manager wired together, plus shutdown order.

Shutdown, in order: ``on_shutdown`` closes the bus so every SSE handler returns at once; then the
cleanup context stops every session (runs are cancelled to a checkpoint) and closes storage.

Stream handlers end within ``DISCONNECT_POLL_S`` of their client going away (``ends_with_its_client``), and
requests aiohttp's parser refuses are logged as one warning line (``ParserRefusalFilter``).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

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
DISCONNECT_POLL_S = 1.0


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
        app.router.add_route(route.method, route.path,
                             ends_with_its_client(route.handler) if route.stream else route.handler)
    install_parser_refusal_filter()
    app[EMBEDDED_WORKERS] = {}
    app.on_shutdown.append(_stop_embedded_workers)
    app.on_shutdown.append(_close_streams)
    app.cleanup_ctx.append(_lifecycle)
    monitor = LoopLagMonitor()
    app[LAG_MONITOR] = monitor
    app.cleanup_ctx.append(monitor.lifecycle)
    app.on_startup.append(_gc_after_start)
    return app


async def _gc_after_start(app: web.Application) -> None:
    """``apiary serve`` starts with the cyclic GC off (cli/main.py): turn it back on once the app has
    started, after moving what exists by then (modules, the app, its stores) to the permanent generation,
    so no later collection scans it again. Callers that left the GC on (tests) are not touched."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def ends_with_its_client(handler: Handler, poll_s: float | None = None) -> Handler:
    """Cancel a stream handler once its client has gone (checked every ``poll_s``).

    aiohttp leaves a handler running after its client disconnects (``handler_cancellation`` is off, as the
    other routes need), so a stream would live on until its next keepalive write fails (``keepalive_s``,
    15 s), keeping its task, its bus subscription and queue, the session's in-use mark (no parking) and, for
    the snapshot streams, a database read a second. The stream handlers treat the cancellation as the end.
    """

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        period = DISCONNECT_POLL_S if poll_s is None else poll_s
        timer: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal timer
            transport = request.transport
            if transport is None or transport.is_closing():
                if task is not None:
                    task.cancel()
                return
            timer = loop.call_later(period, check)

        timer = loop.call_later(period, check)
        try:
            return await handler(request)
        finally:
            timer.cancel()

    return run


class ParserRefusalFilter(logging.Filter):
    """aiohttp logs each request its HTTP parser refuses (a malformed request line, a header too long, ...)
    at ERROR with a traceback, then answers 400 itself: that is the client's fault, so one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or record.levelno < logging.ERROR:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.WARNING):
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg, record.args = "refused a malformed request from %s: %s", (remote, _refusal(exc))
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text = None, None
        return True


def _refusal(exc: HttpProcessingError) -> str:
    text = " ".join(f"{exc.code or ''} {exc.message}".split())   # aiohttp's message spans lines (a caret)
    return f"{type(exc).__name__}: {text[:300]}"


PARSER_REFUSALS = ParserRefusalFilter()


def install_parser_refusal_filter() -> None:
    server_logger = logging.getLogger("aiohttp.server")
    if PARSER_REFUSALS not in server_logger.filters:
        server_logger.addFilter(PARSER_REFUSALS)


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
    app[EMBEDDED_WORKERS]["running"] = _embedded_workers(state.deps)
    yield
    await _stop_embedded_workers(app)
    await state.sessions.aclose()
    await state.deps.tasks.aclose(state.settings.server.shutdown_timeout_s)
    await state.deps.stores.aclose()


EMBEDDED_WORKERS = web.AppKey("apiary.embedded_workers", dict)


async def _stop_embedded_workers(app: web.Application) -> None:
    """Before the bus closes: running executions stop at a checkpoint and are given back for other workers."""
    workers = app[EMBEDDED_WORKERS].pop("running", None)
    if workers is not None:
        stopping, task = workers
        stopping.set()
        await asyncio.gather(task, return_exceptions=True)


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
