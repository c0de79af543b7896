"""Browser journeys against a real ``python -m apiary serve`` process, driven by Playwright + Chromium.

Chromium is the system one (Debian: ``apt-get install chromium``); Playwright's own browser download
is never used. Every test collects console errors and page errors and fails on them, except for
patterns a test explicitly allows (for example connection errors while the server is restarting).
Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uihelpers import CHROMIUM_ARGS, ApiaryServer, ConsoleWatch, chromium_path

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiaryServer]:
    srv = ApiaryServer(tmp_path / "home")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiaryServer]:
    """One server for a whole module, for journeys that only touch their own sessions."""
    srv = ApiaryServer(tmp_path_factory.mktemp("apiary") / "home")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def page(browser: Any, console: ConsoleWatch) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    pg.on("console", lambda msg: console.record(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: console.record(f"pageerror: {exc}"))
    yield pg
    context.close()
    bad = console.unexpected()
    assert not bad, "console errors during the journey:\n" + "\n".join(bad)
