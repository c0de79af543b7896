"""``apiary`` entry point: builds Settings from flags, configures logging, then calls down."""

from __future__ import annotations

import gc
import json
import logging
import sqlite3
import sys
from typing import Any

import click

from apiary import __version__


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": record.levelname, "logger": record.name, "message": record.getMessage(),
                           "time": self.formatTime(record)})


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@click.group()
@click.version_option(__version__, prog_name="apiary")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
def main(log_level: str, log_format: str) -> None:
    """apiary: a runtime for long-running LLM agent sessions."""
    configure_logging(log_level, log_format)


def settings_from(**flags: Any) -> Any:
    from apiary.core.config import Settings

    overrides: dict[str, Any] = {}
    server: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key in ("host", "port"):
            server[key] = value
        else:
            overrides[key] = value
    if server:
        overrides["server"] = server
    return Settings(**overrides)


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8787; 0 picks a free one).")
@click.option("--home", default=None, help="Data folder (default ~/.apiary, or APIARY_HOME).")
@click.option("--model", default=None, help="demo | openai:<model> | anthropic:<model> (or APIARY_MODEL).")
@click.option("--database", "database_url", default=None,
              help="sqlite:///<path> (default: apiary.db in home) or postgresql://... (shared with workers).")
def serve(host: str | None, port: int | None, home: str | None, model: str | None,
          database_url: str | None) -> None:
    """Run the HTTP API, the event streams and the web UI."""
    # No cyclic GC while the server starts: its imports create ~50k long-lived objects, and collecting
    # them over and over took ~10% of the start for almost no garbage. The started app turns it back
    # on, with those objects frozen (server/app.py ``_gc_after_start``).
    gc.disable()
    from apiary.core.errors import ApiaryError
    from apiary.server.runner import run_server

    try:
        settings = settings_from(host=host, port=port, home=home, model=model, database_url=database_url)
        from apiary.llm.registry import parse_model_spec

        parse_model_spec(settings.model)
        run_server(settings)
    except ApiaryError as exc:
        raise click.ClickException(exc.message) from exc
    except (OSError, sqlite3.Error) as exc:
        raise click.ClickException(f"cannot use the data folder {settings.home_dir}: {exc}") from exc


@main.command()
@click.option("--database", "database_url", default=None, help="postgresql://... (or APIARY_DATABASE_URL).")
@click.option("--home", default=None, help="Local folder: this host's copy of each colony and its workspace.")
@click.option("--model", default=None, help="Worker model when the queen names none (or APIARY_MODEL).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Executions this process runs at once.")
def worker(database_url: str | None, home: str | None, model: str | None, concurrency: int) -> None:
    """Run worker executions claimed from a shared PostgreSQL database (run as many as wanted)."""
    import asyncio
    import signal

    from apiary.colonies.worker_service import run_worker
    from apiary.core.errors import ApiaryError

    settings = settings_from(database_url=database_url, home=home, model=model)
    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise click.ClickException("apiary worker needs a shared database: --database postgresql://...")

    async def main_loop() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await run_worker(settings, concurrency=concurrency, stopping=stopping)

    try:
        asyncio.run(main_loop())
    except ApiaryError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot use the data folder {settings.home_dir}: {exc}") from exc


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("migrate")
@click.option("--database", "database_url", default=None, help="postgresql://... or sqlite:///<path>.")
@click.option("--home", default=None, help="Data folder (for the default SQLite database).")
def db_migrate(database_url: str | None, home: str | None) -> None:
    """Create or upgrade the schema (append-only migrations, safe to run on every host)."""
    import asyncio

    from apiary.core.errors import ApiaryError
    from apiary.storage import migrate_database

    settings = settings_from(database_url=database_url, home=home)
    try:
        applied = asyncio.run(migrate_database(settings.database_url, home=settings.home_dir))
    except ApiaryError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")
