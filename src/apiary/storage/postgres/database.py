"""The PostgreSQL connection pool and migrations.

Pooler-safe: no server-side prepared statements (``prepare_threshold=None``), so it works behind
a connection pooler in transaction mode; the pool checks a connection before lending it and
reconnects with backoff when the database restarts. Migrations run at open under
``pg_advisory_xact_lock``, so several processes starting at once apply each one exactly once.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from apiary.storage.postgres.migrations import MIGRATIONS

MIGRATION_LOCK = 0x61706961   # "apia"


def migration_hash(sql: str) -> str:
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()[:16]


async def _configure(conn: AsyncConnection[Any]) -> None:
    conn.prepare_threshold = None
    await conn.set_autocommit(True)


CHECK_AFTER_IDLE_S = 5.0
_returned_at: dict[int, float] = {}


async def _mark_returned(conn: AsyncConnection[Any]) -> None:
    _returned_at[id(conn)] = time.monotonic()


async def _check_if_idle(conn: AsyncConnection[Any]) -> None:
    """The pool's health check, for connections idle long enough to have gone stale: one lent a
    moment ago is not worth a round trip each time (that was a quarter of a task claim's cost)."""
    returned = _returned_at.pop(id(conn), None)
    if returned is None or time.monotonic() - returned > CHECK_AFTER_IDLE_S:
        await AsyncConnectionPool.check_connection(conn)


class PgDatabase:
    def __init__(self, url: str, pool: AsyncConnectionPool[Any]) -> None:
        self.url = url
        self.pool = pool

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PgDatabase:
        db = await cls.open_unmigrated(url, min_size=min_size, max_size=max_size)
        await db.migrate()
        return db

    @classmethod
    async def open_unmigrated(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PgDatabase:
        from apiary.core.errors import StorageError

        try:   # one direct attempt first, so a wrong URL is a clear error at once, not a 30 s wait
            probe = await AsyncConnection.connect(url, connect_timeout=10)
            await probe.close()
        except Exception as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
        pool = AsyncConnectionPool(url, min_size=min_size, max_size=max_size, open=False, configure=_configure,
                                   check=_check_if_idle, reset=_mark_returned, reconnect_timeout=300,
                                   kwargs={"row_factory": tuple_row})
        try:
            await pool.open(wait=True, timeout=30)
        except Exception as exc:
            await pool.close()
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(url, pool)

    async def migrate(self) -> list[str]:
        applied_now: list[str] = []
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS apiary_schema_migrations (version INTEGER PRIMARY KEY,"
                               " name TEXT NOT NULL, hash TEXT NOT NULL)")
            cur = await conn.execute("SELECT version FROM apiary_schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, (name, sql) in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO apiary_schema_migrations (version, name, hash) VALUES (%s, %s, %s)",
                                   (version, name, migration_hash(sql)))
                applied_now.append(name)
        return applied_now

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql, params)

    async def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            for sql, params in statements:
                await conn.execute(sql, params)

    async def close(self) -> None:
        await self.pool.close()
