"""The backends every conformance test runs on (a module of its own so tests can import it)."""

from __future__ import annotations

from pathlib import Path

from apiary.storage.base import Stores
from apiary.storage.memory import MemoryStores
from apiary.storage.sqlite.stores import SqliteStores

LOCAL_BACKENDS = ["memory", "sqlite"]   # cheap enough to open once per hypothesis example
BACKENDS = [*LOCAL_BACKENDS, "postgres"]


async def open_backend(name: str, tmp_path: Path, pg_url: str | None = None) -> Stores:
    if name == "memory":
        return MemoryStores()
    if name == "postgres":
        from apiary.storage.postgres.stores import PgStores

        assert pg_url is not None
        return await PgStores.open(pg_url)
    return await SqliteStores.open(tmp_path / "apiary.db")
