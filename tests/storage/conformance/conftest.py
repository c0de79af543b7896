"""The ``stores`` fixture: every conformance test runs once per storage backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storage_backends import BACKENDS, open_backend

from apiary.storage.base import Stores


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def stores(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    pg_url = request.getfixturevalue("pg_url") if backend == "postgres" else None   # a real server, fresh db
    opened = await open_backend(backend, tmp_path, pg_url)
    yield opened
    await opened.aclose()
