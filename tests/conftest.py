"""Shared fixtures: a real apiary app on a loopback socket with a temporary APIARY_HOME."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from apiary.core.config import Settings
from apiary.server.app import build_app
from helpers import create_session, read_sse, wait_for_event  # noqa: F401  (re-exported)


def make_settings(home: Path, **overrides: Any) -> Settings:
    return Settings(home=home, **overrides)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
async def make_client(home: Path) -> AsyncIterator[Callable[..., Any]]:
    """Build clients on the same home (call again after closing one to 'restart' the server)."""
    clients: list[TestClient] = []

    async def factory(**kwargs: Any) -> TestClient:
        llm_factory = kwargs.pop("llm_factory", None)
        settings = make_settings(home, **kwargs)
        app = await build_app(settings, llm_factory=llm_factory)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def api(make_client: Callable[..., Any]) -> TestClient:
    return await make_client()


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole run (started by the test setup, removed afterwards)."""
    import os

    from pg_server import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries not found (install Debian's postgresql or set APIARY_PG_BINDIR)")
        pytest.skip("PostgreSQL binaries not found (install Debian's postgresql or set APIARY_PG_BINDIR)")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, request) -> str:
    """A fresh, empty database for one test."""
    import re
    import secrets

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + secrets.token_hex(3)
    return pg_server.create_database(name)
