"""PostgreSQL backend specifics: ids gap-free across processes, NOTIFY-driven fan-out in order,
SKIP LOCKED claims exactly once across processes, leases reclaimed by any node, migrations."""

from __future__ import annotations

import asyncio
import multiprocessing

import psycopg

from apiary.bus.bus import EventBus
from apiary.core.clock import SystemClock
from apiary.core.events import Event
from apiary.storage.postgres.database import PgDatabase
from apiary.storage.postgres.migrations import MIGRATIONS
from apiary.storage.postgres.stores import PgStores
from apiary.storage.postgres.tasks import PgTaskQueue


async def test_two_hosts_append_gap_free(pg_url):
    a, b = await PgStores.open(pg_url), await PgStores.open(pg_url)
    try:
        async def burst(stores, tag):
            for i in range(40):
                await stores.events.append("s1", Event(type="custom", data={"who": tag, "i": i}))

        await asyncio.gather(burst(a, "a"), burst(b, "b"), burst(a, "a2"))
        events = await b.events.read("s1")
        assert [e.id for e in events] == list(range(1, 121))
        assert await a.events.last_id("s1") == 120
        tail = await a.events.read_tail("s1", 5)
        assert [e.id for e in tail] == [116, 117, 118, 119, 120]
    finally:
        await a.aclose()
        await b.aclose()


async def test_events_written_elsewhere_reach_subscribers_in_order(pg_url):
    writer, reader = await PgStores.open(pg_url), await PgStores.open(pg_url)
    clock = SystemClock()
    bus = EventBus(reader.events, clock, remote=True)
    reader.add_notification_callback(bus.on_notification)
    local = EventBus(writer.events, clock, remote=True)
    try:
        await asyncio.wait_for(reader.notifier.connected.wait(), 10)
        async with bus.subscribe("s1") as sub:
            for i in range(30):
                target = local if i % 3 else bus   # some published here, most by the other "host"
                await target.publish("s1", Event(type="custom", data={"i": i}))
            got = []
            while len(got) < 30:
                stored = await sub.get(timeout_s=10)
                assert stored is not None
                got.append(stored)
        assert [s.id for s in got] == list(range(1, 31))
        assert [s.event.data["i"] for s in got] == list(range(30))
    finally:
        await bus.close()
        await writer.aclose()
        await reader.aclose()


def _claim_until_empty(url: str, colony: str, worker: str, out: multiprocessing.Queue) -> None:
    async def run() -> list[str]:
        db = await PgDatabase.open(url, max_size=2)
        queue = PgTaskQueue(db, colony)
        mine = []
        try:
            while (task := await queue.claim(worker)) is not None:
                assert await queue.complete(task.id, worker)
                mine.append(task.id)
        finally:
            await db.close()
        return mine

    out.put(asyncio.run(run()))


async def test_skip_locked_claims_each_task_once_across_processes(pg_url):
    db = await PgDatabase.open(pg_url)
    queue = PgTaskQueue(db, "c1")
    ids = await queue.enqueue([{"goal": f"t{i}"} for i in range(300)])
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_until_empty, args=(pg_url, "c1", f"w{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    claimed: list[str] = []
    for _ in procs:
        claimed += await asyncio.to_thread(out.get, True, 120)
    for p in procs:
        p.join(30)
    assert sorted(claimed) == sorted(ids)
    assert len(set(claimed)) == len(claimed)
    counts = await queue.counts()
    assert counts["done"] == 300
    assert counts["total"] == 300
    double = await db.fetchone("SELECT COUNT(*) FROM (SELECT task_id FROM apiary_task_events WHERE kind = 'claimed'"
                               " GROUP BY task_id HAVING COUNT(*) > 1) d")
    assert double == (0,)
    await db.close()


async def test_expired_lease_is_reclaimed_by_any_node(pg_url):
    db = await PgDatabase.open(pg_url)
    dead = PgTaskQueue(db, "c1", lease_s=0.2)
    other = PgTaskQueue(db, "c1", lease_s=60)
    (task_id,) = await dead.enqueue([{"goal": "g", "max_retries": 1}])
    claimed = await dead.claim("dead-worker")
    assert claimed is not None
    assert await other.claim("w2") is None
    await asyncio.sleep(0.4)
    assert await other.reclaim_stale() == 1
    again = await other.claim("w2")
    assert again is not None
    assert again.id == task_id
    assert again.retry_count == 1
    assert not await dead.complete(task_id, "dead-worker"), "the dead worker lost its claim"
    assert await other.complete(task_id, "w2")
    await db.close()


async def test_migrations_apply_once_from_empty_and_from_every_earlier_version(pg_url):
    db = await PgDatabase.open(pg_url)
    rows = await db.fetchall("SELECT version, name FROM apiary_schema_migrations ORDER BY version")
    assert [r[1] for r in rows] == [name for name, _ in MIGRATIONS]
    assert await db.migrate() == []
    await db.close()
    for keep in range(len(MIGRATIONS)):
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
            conn.execute("CREATE TABLE apiary_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                         " hash TEXT NOT NULL)")
            for version, (name, sql) in enumerate(MIGRATIONS[:keep], start=1):
                conn.execute(sql)
                conn.execute("INSERT INTO apiary_schema_migrations VALUES (%s, %s, 'x')", (version, name))
        db = await PgDatabase.open(pg_url)
        assert await db.fetchall("SELECT COUNT(*) FROM apiary_schema_migrations") == [(len(MIGRATIONS),)]
        await db.close()
