"""apiary.db migrations: shipped entries never change, and an old database gets only what it lacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from apiary.core.events import Event
from apiary.storage.sqlite.database import Database, migration_hash
from apiary.storage.sqlite.migrations import MIGRATIONS
from apiary.storage.sqlite.stores import SqliteStores

# The hash of every migration ever shipped, in order. Append a line when adding a migration;
# never edit one: a changed hash means a shipped migration was changed.
SHIPPED = [
    ("m001_events", "7c6d608c47da05d7"),
    ("m002_conversations", "26295115b50131d8"),
    ("m003_recordings", "beb39c56b18776f3"),
]


def test_shipped_migrations_are_unchanged():
    current = [(name, migration_hash(sql)) for name, sql in MIGRATIONS]
    assert current[: len(SHIPPED)] == SHIPPED
    assert len(current) >= len(SHIPPED), "a shipped migration was removed"


def test_new_migrations_are_pinned_too():
    assert len(MIGRATIONS) == len(SHIPPED), "add the new migration's name and hash to SHIPPED"


def test_hash_ignores_whitespace_only():
    assert migration_hash("CREATE TABLE x (a INT);") == migration_hash("  CREATE   TABLE x\n(a INT);\n")
    assert migration_hash("CREATE TABLE x (a INT);") != migration_hash("CREATE TABLE x (b INT);")


def _applied(path: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT version, name, hash FROM schema_migrations ORDER BY version"))


async def test_fresh_database_records_every_migration(tmp_path: Path):
    path = tmp_path / "apiary.db"
    db = await Database.open(path)
    await db.close()
    assert _applied(path) == [(i, name, h) for i, (name, h) in enumerate(SHIPPED, start=1)]


def _make_old_database(path: Path, versions: int) -> None:
    """A database written by an apiary that shipped only the first ``versions`` migrations."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " hash TEXT NOT NULL)")
        for version, (name, sql) in enumerate(MIGRATIONS[:versions], start=1):
            conn.executescript(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, migration_hash(sql)))
        conn.execute("INSERT INTO events (session_id, id, type, body) VALUES ('s1', 1, 'custom', ?)",
                     ('{"id": 1, "type": "custom", "data": {"old": true}}',))


async def test_old_database_gets_only_the_missing_migrations(tmp_path: Path):
    path = tmp_path / "apiary.db"
    _make_old_database(path, versions=1)
    # m001 has no IF NOT EXISTS: running it again would fail, so opening proves it was skipped.
    stores = await SqliteStores.open(path)
    try:
        assert _applied(path) == [(i, name, h) for i, (name, h) in enumerate(SHIPPED, start=1)]
        [old] = await stores.events.read("s1")
        assert old.event.data == {"old": True}
        assert (await stores.events.append("s1", Event(type="custom"))).id == 2
        await stores.conversations.put_cursor("queen:s1", {"next_seq": 0})    # m002 is there
        await stores.recordings.put("o", "r", 0, "k", 1)                      # m003 is there
    finally:
        await stores.aclose()


async def test_reopening_an_up_to_date_database_applies_nothing(tmp_path: Path):
    path = tmp_path / "apiary.db"
    db = await Database.open(path)
    await db.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_migrations SET name = name || '_seen'")
    db = await Database.open(path)
    await db.close()
    assert [row[1] for row in _applied(path)] == [f"{name}_seen" for name, _ in SHIPPED]


# The PostgreSQL backend's shipped migrations, pinned the same way.
PG_SHIPPED = [
    ("m001_events", "a0272f22fc0bd777"),
    ("m002_conversations", "46c2dad3ce02ed3a"),
    ("m003_recordings", "903b6a10782f78ff"),
    ("m004_tasks", "a614d3fa1cad969d"),
    ("m005_worker_sessions", "63b42cb7936ce7ef"),
    ("m006_colonies_and_mailbox", "6ef2dd9b527a3279"),
    ("m007_executions", "1b8888a886c5401c"),
    ("m008_task_claim_order", "d57ac34982346c12"),
    ("m009_session_leases", "53467649f9e4ed59"),
]


def test_postgres_migrations_are_pinned():
    from apiary.storage.postgres.database import migration_hash as pg_hash
    from apiary.storage.postgres.migrations import MIGRATIONS as PG_MIGRATIONS

    assert [(name, pg_hash(sql)) for name, sql in PG_MIGRATIONS] == PG_SHIPPED
