"""apiary.db: one aiosqlite connection (one writer), WAL, migrations applied under a lock at open.

Invariants: every write is one autocommit statement or one ``BEGIN IMMEDIATE`` transaction, so a
crash leaves the old state or the new one. The one connection is shared by every task, so each
statement and each transaction runs under one asyncio lock: a statement never lands inside
another task's open transaction, and a read never sees one half done.
"""

from __future__ import annotations

import asyncio
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
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, migrate: bool = True) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        db = cls(conn)
        try:
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
                await conn.execute(f"PRAGMA {pragma}")
            if migrate:
                await db.migrate()
        except BaseException:
            await conn.close()   # else its worker thread keeps the process alive after a refused start
            raise
        return db

    async def migrate(self) -> list[str]:
        """Apply the missing migrations under ``BEGIN IMMEDIATE``; returns the names applied now."""
        applied_now: list[str] = []
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
                applied_now.append(name)
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise
        return applied_now

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        async with self._lock:
            await self.conn.execute(sql, tuple(params))

    async def insert_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Many rows of one statement as one atomic write (one thread hop for the rows)."""
        async with self._lock:
            if len(rows) == 1:
                await self.conn.execute(sql, rows[0])
                return
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                await self.conn.executemany(sql, rows)
                await self.conn.execute("COMMIT")
            except BaseException:
                await asyncio.shield(self.conn.execute("ROLLBACK"))
                raise

    async def read_many(self, queries: list[tuple[str, tuple[Any, ...]]]) -> list[list[Any]]:
        """Several reads from one consistent snapshot."""
        async with self._lock:
            results = []
            for sql, params in queries:
                async with self.conn.execute(sql, params) as cur:
                    results.append(list(await cur.fetchall()))
            return results

    async def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run several statements as one atomic write."""
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    await self.conn.execute(sql, params)
                await self.conn.execute("COMMIT")
            except BaseException:
                await asyncio.shield(self.conn.execute("ROLLBACK"))
                raise

    async def close(self) -> None:
        await self.conn.close()
