"""Storage: interfaces in base.py, backends memory/ and sqlite/; ``open_stores`` picks one by URL."""

from __future__ import annotations

from pathlib import Path

from apiary.core.errors import ConfigurationError
from apiary.storage.base import Stores


async def open_stores(url: str, *, home: Path, listen_url: str = "") -> Stores:
    """``memory://``, ``sqlite:///path``, ``postgresql://...`` or "" (apiary.db under ``home``)."""
    if url == "memory://":
        from apiary.storage.memory import MemoryStores

        return MemoryStores()
    if url in ("", "sqlite://") or url.startswith("sqlite:///"):
        from apiary.storage.sqlite.stores import SqliteStores

        path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else home / "apiary.db"
        return await SqliteStores.open(path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from apiary.storage.postgres.stores import PgStores
        except ImportError as exc:
            raise ConfigurationError("PostgreSQL support is not installed: pip install 'apiary[postgres]'") from exc
        return await PgStores.open(url, listen_url=listen_url or url)
    raise ConfigurationError(
        f"unsupported database URL {url!r}: use postgresql://..., sqlite:///<path>, or leave it empty")


async def migrate_database(url: str, *, home: Path) -> list[str]:
    """Apply missing migrations; returns the names applied now."""
    if url.startswith(("postgresql://", "postgres://")):
        from apiary.storage.postgres.database import PgDatabase

        db = await PgDatabase.open_unmigrated(url)
        try:
            return await db.migrate()
        finally:
            await db.close()
    from apiary.storage.sqlite.database import Database

    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else home / "apiary.db"
    sqlite_db = await Database.open(path, migrate=False)
    try:
        return await sqlite_db.migrate()
    finally:
        await sqlite_db.close()


__all__ = ["Stores", "migrate_database", "open_stores"]
