"""Running the HTTP server until SIGINT/SIGTERM, printing the URL once it listens."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web
from pydantic import SecretStr

from apiary.core.config import Settings


def with_required_token(settings: Settings) -> Settings:
    """Off loopback the API is never served without a token (SPEC A 1.6)."""
    from apiary.server.security import ensure_token, is_loopback

    if settings.server.api_token is not None or is_loopback(settings.server.host):
        return settings
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    token, created = ensure_token(home)
    if created:
        print(f"apiary: generated an API token (shown once; stored in {home / 'api_token'}):\n  {token}",
              flush=True)
    else:
        print(f"apiary: API token required; it is in {home / 'api_token'}", flush=True)
    server = settings.server.model_copy(update={"api_token": SecretStr(token)})
    return settings.model_copy(update={"server": server})


async def serve_forever(settings: Settings) -> None:
    from apiary.server.app import build_app

    settings = with_required_token(settings)
    app = await build_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=settings.server.shutdown_timeout_s, access_log=None,
                           handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else settings.server.port  # type: ignore[union-attr]
    host = settings.server.host
    shown = f"[{host}]" if ":" in host else host
    model = settings.model if settings.model != "demo" else "demo (offline demo model, no API key)"
    print(f"apiary listening on http://{shown}:{port}  model: {model}  home: {settings.home_dir}", flush=True)
    try:
        await stop.wait()
    finally:
        print("apiary shutting down", file=sys.stderr, flush=True)
        await runner.cleanup()


def run_server(settings: Settings) -> None:
    asyncio.run(serve_forever(settings))
