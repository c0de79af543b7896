"""apiary.db: one aiosqlite connection (one writer), WAL, migrations applied under a lock at open.

Invariants: every write is one autocommit statement or one ``BEGIN IMMEDIATE`` transaction, so a
crash leaves the old state or the new one. The one connection is shared by every task; a
transaction is always sent as one call into the connection's thread (``run``), which runs its
calls one at a time in the order queued, so a statement never lands inside another task's open
transaction and a read never sees one half done. The hot writes (events, conversations) go
through ``writer`` (writer.py), which groups them into shared commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from apiary.storage.sqlite.migrations import MIGRATIONS
from apiary.storage.sqlite.writer import Writer

T = TypeVar("T")


def migration_hash(sql: str) -> str:
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()[:16]


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()
        self.writer = Writer(self)

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

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(sqlite3 connection)`` in aiosqlite's thread, as one call.

        The lock is held only while the call is queued, not until it has run: aiosqlite's thread
        runs its calls one at a time in the order queued, so the call can neither land inside a
        transaction another task holds the lock for, nor be overtaken by what is queued after it,
        and the connection is free for the next task during the round trip."""
        conn = self.conn
        tx = getattr(conn, "_tx", None)
        async with self._lock:
            if tx is None or not hasattr(tx, "put_nowait"):   # not the aiosqlite we know: the public way
                return await conn._execute(lambda: fn(conn._conn))  # type: ignore[no-any-return]
            if not getattr(conn, "_running", False) or getattr(conn, "_connection", None) is None:
                raise ValueError("Connection closed")
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            tx.put_nowait((future, lambda: fn(conn._conn)))
        return await future

    async def insert_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Many rows of one statement as one atomic write, in one call."""
        await self.run(lambda conn: _in_transaction(conn, lambda: conn.executemany(sql, rows)))

    async def read_many(self, queries: list[tuple[str, tuple[Any, ...]]]) -> list[list[Any]]:
        """Several reads from one consistent snapshot, in one call."""
        def read(conn: sqlite3.Connection) -> list[list[Any]]:
            conn.execute("BEGIN")
            try:
                return [conn.execute(sql, params).fetchall() for sql, params in queries]
            finally:
                conn.execute("COMMIT")

        return await self.run(read)

    async def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Several statements as one atomic write, in one call."""
        def run_all(conn: sqlite3.Connection) -> None:
            for sql, params in statements:
                conn.execute(sql, params)

        await self.run(lambda conn: _in_transaction(conn, lambda: run_all(conn)))

    async def close(self) -> None:
        await self.writer.aclose()
        await self.conn.close()


def _in_transaction(conn: sqlite3.Connection, body: Callable[[], Any]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        body()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
