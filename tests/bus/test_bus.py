"""EventBus: the log append comes before any fan-out, a slow subscriber never blocks a publisher,
and closing ends every subscription (SPEC B 5, A 4.4)."""

from __future__ import annotations

import asyncio

import pytest

from apiary.bus.bus import EventBus
from apiary.core.clock import FakeClock
from apiary.core.events import Event, StoredEvent
from apiary.storage.memory import MemoryEventLog


def make_bus(queue_size: int = 1000) -> EventBus:
    return EventBus(MemoryEventLog(), FakeClock(), queue_size=queue_size)


class GatedLog(MemoryEventLog):
    """Appends wait for ``gate``; ``fail`` makes the next append raise."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.fail = False

    async def append(self, session_id: str, event: Event) -> StoredEvent:
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            raise OSError("disk full")
        return await super().append(session_id, event)


async def drain(sub, n: int) -> list[StoredEvent | None]:
    return [await sub.get(timeout_s=5) for _ in range(n)]


async def test_subscriber_sees_an_event_only_after_it_is_in_the_log():
    log = GatedLog()
    bus = EventBus(log, FakeClock())
    seen_in_log: list[bool] = []
    bus.add_listener(lambda sid, stored: seen_in_log.append(len(log._logs.get(sid, [])) >= stored.id))
    async with bus.subscribe("s1") as sub:
        publishing = asyncio.create_task(bus.publish("s1", Event(type="custom")))
        await log.entered.wait()
        assert sub.queue.empty()          # the append has not finished: nothing fanned out
        log.gate.set()
        stored = await publishing
        got = await sub.get(timeout_s=5)
    assert got is not None and got.id == stored.id == 1
    assert seen_in_log == [True]
    assert [s.id for s in await log.read("s1")] == [1]


async def test_failed_append_is_not_fanned_out():
    log = GatedLog()
    log.gate.set()
    log.fail = True
    bus = EventBus(log, FakeClock())
    async with bus.subscribe("s1") as sub:
        with pytest.raises(OSError):
            await bus.publish("s1", Event(type="custom"))
        assert sub.queue.empty()


async def test_publish_stamps_utc_timestamp_and_keeps_given_one():
    bus = make_bus()
    stamped = await bus.publish("s1", Event(type="custom"))
    assert stamped.event.timestamp.endswith("+00:00")
    kept = await bus.publish("s1", Event(type="custom", timestamp="2026-05-01T00:00:00+00:00"))
    assert kept.event.timestamp == "2026-05-01T00:00:00+00:00"


async def test_subscribers_get_events_of_their_session_in_order():
    bus = make_bus()
    async with bus.subscribe("s1") as a, bus.subscribe("s1") as b, bus.subscribe("s2") as other:
        await bus.publish("s1", Event(type="x", data={"n": 1}))
        await bus.publish_many("s1", [Event(type="x", data={"n": n}) for n in (2, 3)])
        await bus.publish("s2", Event(type="x", data={"n": 9}))
        for sub in (a, b):
            assert [s.id for s in await drain(sub, 3)] == [1, 2, 3]  # type: ignore[union-attr]
        [only] = await drain(other, 1)
        assert only is not None and only.event.data == {"n": 9} and only.id == 1
        assert a.queue.empty() and other.queue.empty()


async def test_slow_subscriber_overflows_without_blocking_publish():
    bus = make_bus(queue_size=3)
    async with bus.subscribe("s1") as slow, bus.subscribe("s1") as fast:
        received: list[int] = []
        for n in range(10):      # the slow one never reads; every publish still returns
            await bus.publish("s1", Event(type="x", data={"n": n}))
            stored = await fast.get(timeout_s=5)     # the fast one keeps up
            assert stored is not None
            received.append(stored.id)
        assert slow.overflowed is True
        assert fast.overflowed is False
        assert received == list(range(1, 11))
        # the slow subscriber gets what fitted, then the end of its subscription, and nothing more
        assert [s.id if s else None for s in await drain(slow, 4)] == [1, 2, 3, None]
        await bus.publish("s1", Event(type="x"))
        assert await slow.get(timeout_s=5) is None
    assert len(await bus.log.read("s1")) == 11     # publishing itself lost nothing


async def test_close_ends_every_subscription():
    bus = make_bus()
    async with bus.subscribe("s1") as a, bus.subscribe("s2") as b:
        waiting = asyncio.create_task(a.get())
        await asyncio.sleep(0)
        await bus.close()
        assert await waiting is None
        assert await b.get(timeout_s=5) is None
        assert await a.get(timeout_s=5) is None   # stays ended for later reads
        assert not a.overflowed
    async with bus.subscribe("s1") as late:      # subscribing after close ends at once
        assert await late.get(timeout_s=5) is None


async def test_end_session_ends_only_that_session():
    bus = make_bus()
    async with bus.subscribe("s1") as a, bus.subscribe("s2") as b:
        bus.end_session("s1")
        assert await a.get(timeout_s=5) is None
        await bus.publish("s2", Event(type="x"))
        got = await b.get(timeout_s=5)
        assert got is not None and got.id == 1


async def test_subscription_is_removed_on_exit():
    bus = make_bus()
    async with bus.subscribe("s1"):
        async with bus.subscribe("s1"):
            assert bus.subscriber_count("s1") == 2
        assert bus.subscriber_count("s1") == 1
    assert bus.subscriber_count("s1") == 0
    await bus.publish("s1", Event(type="x"))     # no subscriber: still logged
    assert await bus.log.last_id("s1") == 1


async def test_get_times_out_when_nothing_arrives():
    bus = make_bus()
    async with bus.subscribe("s1") as sub:
        with pytest.raises(TimeoutError):
            await sub.get(timeout_s=0.01)
