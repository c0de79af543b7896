"""A hypothesis property over the event log: after any mix of appends and reads, ids are
1..N without gaps and ``read(after=n)`` is exactly the suffix (SPEC B 5)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_backends import LOCAL_BACKENDS, open_backend

from apiary.core.events import Event

SESSIONS = ("a", "b")
operation = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(SESSIONS), st.integers(1, 1)),
    st.tuples(st.just("append_many"), st.sampled_from(SESSIONS), st.integers(0, 6)),
    st.tuples(st.just("read"), st.sampled_from(SESSIONS), st.integers(-1, 30)),
    st.tuples(st.just("tail"), st.sampled_from(SESSIONS), st.integers(0, 10)),
)


async def _check(backend: str, ops: list[tuple[str, str, int]], concurrent: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stores = await open_backend(backend, Path(tmp))
        log = stores.events
        model: dict[str, list[int]] = {s: [] for s in SESSIONS}    # payloads in id order
        counter = 0
        try:
            for kind, sid, n in ops:
                if kind in ("append", "append_many"):
                    payloads = list(range(counter, counter + n))
                    counter += n
                    events = [Event(type="custom", data={"p": p}) for p in payloads]
                    if kind == "append":
                        stored = [await log.append(sid, events[0])]
                    elif concurrent:
                        results = await asyncio.gather(*(log.append(sid, e) for e in events))
                        stored = sorted(results, key=lambda s: s.id)
                        payloads = [s.event.data["p"] for s in stored]
                    else:
                        stored = await log.append_many(sid, events)
                    first = len(model[sid]) + 1
                    assert [s.id for s in stored] == list(range(first, first + len(events)))
                    model[sid] += payloads
                elif kind == "read":
                    got = await log.read(sid, after=max(n, 0))
                    expected = list(enumerate(model[sid], start=1))[max(n, 0):]
                    assert [(s.id, s.event.data["p"]) for s in got] == expected
                else:
                    got = await log.read_tail(sid, n)
                    expected = list(enumerate(model[sid], start=1))[-n:] if n else []
                    assert [(s.id, s.event.data["p"]) for s in got] == expected
            for sid in SESSIONS:
                assert await log.last_id(sid) == len(model[sid])
                assert [s.id for s in await log.read(sid)] == list(range(1, len(model[sid]) + 1))
        finally:
            await stores.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(backend=st.sampled_from(LOCAL_BACKENDS), ops=st.lists(operation, max_size=25), concurrent=st.booleans())
def test_event_log_matches_a_list_model(backend: str, ops: list[tuple[str, str, int]], concurrent: bool):
    asyncio.run(_check(backend, ops, concurrent))
