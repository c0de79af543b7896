"""apiary.db: one aiosqlite connection (one writer), WAL, migrations applied under a lock at open.

Invariants: every write is one autocommit statement or one ``BEGIN IMMEDIATE`` transaction, so a
crash leaves the old state or the new one; event ids are assigned under one asyncio lock per
database, so they are gap-free and ordered even with concurrent publishers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from apiary.storage.sqlite.migrations import MIGRATIONS


def migration_hash(sql: str) -> str:
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()[:16]


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: Path) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        db = cls(conn)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await conn.execute(f"PRAGMA {pragma}")
        await db._migrate()
        return db

    async def _migrate(self) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            await self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " hash TEXT NOT NULL)"
            )
            rows = await self.fetchall("SELECT version FROM schema_migrations")
            applied = {r[0] for r in rows}
            for version, (name, sql) in enumerate(MIGRATIONS, start=1):
                if version in applied:
                    continue
                for statement in filter(str.strip, sql.split(";")):
                    await self.conn.execute(statement)
                await self.conn.execute(
                    "INSERT INTO schema_migrations (version, name, hash) VALUES (?, ?, ?)",
                    (version, name, migration_hash(sql)),
                )
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        await self.conn.execute(sql, tuple(params))

    async def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run several statements as one atomic write."""
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                await self.conn.execute(sql, params)
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self.conn.close()
