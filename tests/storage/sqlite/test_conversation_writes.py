"""Conversation and recording writes in apiary.db: a step's writes as one transaction, and writes of
many loops at once committed together without one failing write taking the others down."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from apiary.storage.sqlite.stores import SqliteStores

OWNER = "worker:w1"


@pytest.fixture
async def stores(tmp_path: Path):
    stores = await SqliteStores.open(tmp_path / "apiary.db")
    yield stores
    await stores.aclose()


def message(seq: int, content: str = "x") -> dict:
    return {"seq": seq, "role": "assistant", "content": content}


async def test_write_many_stores_every_kind_in_order(stores: SqliteStores):
    conv = stores.conversations
    assert conv.batches_with(stores.recordings)
    await conv.put_partial(OWNER, 2, {"seq": 2, "role": "assistant", "content": "par"})
    await conv.write_many([
        ("delete", "worker:other"),
        ("meta", OWNER, {"system_prompt": "p"}),
        ("message", OWNER, message(1, "one")),
        ("message", OWNER, message(2, "two")),
        ("partial", OWNER, 2, None),
        ("record", OWNER, "run1", 1, "model:0", {"text": "two"}),
        ("cursor", OWNER, {"next_seq": 3}),
    ])
    loaded = await conv.load(OWNER)
    assert loaded.meta == {"system_prompt": "p"}
    assert [m["content"] for m in loaded.messages] == ["one", "two"]
    assert loaded.partials == {}
    assert loaded.cursor == {"next_seq": 3}
    assert await stores.recordings.get_run(OWNER, "run1") == {(1, "model:0"): {"text": "two"}}


async def test_a_failing_write_many_leaves_nothing_behind(stores: SqliteStores):
    conv = stores.conversations
    with pytest.raises(ValueError, match="unknown write"):
        await conv.write_many([("message", OWNER, message(1)), ("bogus", OWNER)])
    with pytest.raises(sqlite3.Error):
        # the message lands first, then the second statement fails: the transaction is undone
        await conv.write_many([("message", OWNER, message(1)), ("record", OWNER, "r", None, None, {})])
    assert (await conv.load(OWNER)).messages == []


async def test_concurrent_writes_are_grouped_and_each_stays_atomic(stores: SqliteStores):
    """Many loops writing at once: all good writes land, a bad one fails alone."""
    conv = stores.conversations

    async def good(n: int) -> None:
        await conv.write_many([("message", f"worker:{n}", message(1, f"m{n}")),
                               ("cursor", f"worker:{n}", {"next_seq": 2})])

    async def bad() -> None:
        await conv.write_many([("message", "worker:bad", message(1)),
                               ("record", "worker:bad", "r", None, None, {})])   # step NOT NULL

    results = await asyncio.gather(*(good(n) for n in range(50)), bad(), *(good(n) for n in range(50, 100)),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.Error)
    for n in (0, 49, 50, 99):
        loaded = await conv.load(f"worker:{n}")
        assert [m["content"] for m in loaded.messages] == [f"m{n}"]
        assert loaded.cursor == {"next_seq": 2}
    assert (await conv.load("worker:bad")).messages == []


async def test_each_loop_reads_its_own_writes_while_others_write(stores: SqliteStores):
    conv = stores.conversations

    async def loop(n: int) -> list[int]:
        owner = f"worker:{n}"
        for seq in range(5):
            await conv.append_message(owner, message(seq))
        return [m["seq"] for m in (await conv.load(owner)).messages]

    assert await asyncio.gather(*(loop(n) for n in range(30))) == [list(range(5))] * 30
