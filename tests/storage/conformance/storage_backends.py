"""The backends every conformance test runs on (a module of its own so tests can import it)."""

from __future__ import annotations

from pathlib import Path

from apiary.storage.base import Stores
from apiary.storage.memory import MemoryStores
from apiary.storage.sqlite.stores import SqliteStores

BACKENDS = ["memory", "sqlite"]


async def open_backend(name: str, tmp_path: Path) -> Stores:
    if name == "memory":
        return MemoryStores()
    return await SqliteStores.open(tmp_path / "apiary.db")
