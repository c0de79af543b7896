"""The database restarts under a running process: the pool and the LISTEN connection come back by
themselves, and whoever listens is told to re-read what it may have missed (payload None)."""

from __future__ import annotations

import asyncio

import pytest

from apiary.core.events import Event
from apiary.storage.postgres.stores import PgStores


@pytest.fixture
def own_server():
    from pg_server import PostgresServer, find_bindir

    bindir = find_bindir()
    assert bindir is not None, "PostgreSQL binaries not found"
    server = PostgresServer(bindir, durable=True).start()   # commits survive the crash
    yield server
    server.stop()


async def test_pool_and_listener_reconnect_after_a_database_crash(own_server):
    url = own_server.create_database("restart")
    stores = await PgStores.open(url)
    notes: list[tuple[str, str | None]] = []
    stores.add_notification_callback(lambda channel, payload: notes.append((channel, payload)))
    try:
        await asyncio.wait_for(stores.notifier.connected.wait(), 10)
        first = await stores.events.append("s1", Event(type="custom", data={"n": 1}))
        await asyncio.to_thread(own_server.crash)
        with pytest.raises(Exception):   # noqa: B017 - any error is fine while it is down
            await asyncio.wait_for(stores.events.append("s1", Event(type="custom", data={"n": 2})), 5)
        await asyncio.to_thread(own_server.restart)

        async def append_again() -> int:
            for _ in range(100):
                try:
                    return (await stores.events.append("s1", Event(type="custom", data={"n": 3}))).id
                except Exception:
                    await asyncio.sleep(0.2)
            raise AssertionError("the pool did not reconnect")

        again = await asyncio.wait_for(append_again(), 40)
        assert again == first.id + 1   # no id lost or reused across the crash
        for _ in range(150):   # the LISTEN connection came back and said so
            if any(payload is None for _, payload in notes):
                break
            await asyncio.sleep(0.2)
        assert any(payload is None for _, payload in notes)
        notes.clear()
        await stores.events.append("s1", Event(type="custom", data={"n": 4}))
        for _ in range(50):
            if ("apiary_events", "s1") in notes:
                break
            await asyncio.sleep(0.1)
        assert ("apiary_events", "s1") in notes
    finally:
        await stores.aclose()
