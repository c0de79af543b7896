"""ConversationStore and RecordingStore conformance, run on every backend."""

from __future__ import annotations

from pathlib import Path

from apiary.core.messages import make_message
from apiary.storage.base import Stores
from apiary.storage.sqlite.stores import SqliteStores

OWNER = "queen:s1"


def msg(seq: int, role: str = "user", content: str | None = None, **extra: object) -> dict:
    return make_message(seq, role, content if content is not None else f"m{seq}", **extra)  # type: ignore[arg-type]


async def test_empty_owner_loads_empty(stores: Stores):
    conv = await stores.conversations.load("nobody")
    assert conv.meta is None
    assert conv.messages == []
    assert conv.cursor is None
    assert conv.partials == {}


async def test_messages_load_in_seq_order_whatever_the_append_order(stores: Stores):
    for seq in (2, 0, 3, 1):
        await stores.conversations.append_message(OWNER, msg(seq))
    conv = await stores.conversations.load(OWNER)
    assert [m["seq"] for m in conv.messages] == [0, 1, 2, 3]
    assert [m["content"] for m in conv.messages] == ["m0", "m1", "m2", "m3"]


async def test_append_same_seq_replaces(stores: Stores):
    await stores.conversations.append_message(OWNER, msg(0, content="old"))
    await stores.conversations.append_message(OWNER, msg(0, content="new"))
    conv = await stores.conversations.load(OWNER)
    assert [m["content"] for m in conv.messages] == ["new"]


async def test_message_fields_round_trip(stores: Stores):
    call = {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"x\"}"}}
    stored = [msg(0, "user", "héllo ✓", is_client_input=True, run_id="r1"),
              msg(1, "assistant", "", tool_calls=[call]),
              msg(2, "tool", "ERROR", tool_use_id="c1", is_error=True),
              msg(3, "assistant", "half", truncated=True)]
    for m in stored:
        await stores.conversations.append_message(OWNER, m)
    assert (await stores.conversations.load(OWNER)).messages == stored


async def test_loaded_conversation_is_a_copy(stores: Stores):
    await stores.conversations.append_message(OWNER, msg(0))
    await stores.conversations.put_cursor(OWNER, {"next_seq": 1})
    conv = await stores.conversations.load(OWNER)
    conv.messages[0]["content"] = "mutated"
    conv.cursor["next_seq"] = 99   # type: ignore[index]
    again = await stores.conversations.load(OWNER)
    assert again.messages[0]["content"] == "m0"
    assert again.cursor == {"next_seq": 1}


async def test_cursor_and_meta_are_independent_and_replaced(stores: Stores):
    await stores.conversations.put_cursor(OWNER, {"next_seq": 1, "iteration": 0})
    await stores.conversations.put_meta(OWNER, {"system_prompt": "a", "max_context_tokens": 100})
    await stores.conversations.put_cursor(OWNER, {"next_seq": 5, "pending_input": None})
    conv = await stores.conversations.load(OWNER)
    assert conv.cursor == {"next_seq": 5, "pending_input": None}
    assert conv.meta == {"system_prompt": "a", "max_context_tokens": 100}
    await stores.conversations.put_meta(OWNER, {"system_prompt": "b"})
    conv = await stores.conversations.load(OWNER)
    assert conv.meta == {"system_prompt": "b"}
    assert conv.cursor == {"next_seq": 5, "pending_input": None}


async def test_meta_without_cursor(stores: Stores):
    await stores.conversations.put_meta(OWNER, {"system_prompt": "p"})
    conv = await stores.conversations.load(OWNER)
    assert conv.meta == {"system_prompt": "p"}
    assert conv.cursor is None


async def test_partials_put_replace_and_clear(stores: Stores):
    await stores.conversations.put_partial(OWNER, 4, {"seq": 4, "role": "assistant", "content": "Hel"})
    await stores.conversations.put_partial(OWNER, 4, {"seq": 4, "role": "assistant", "content": "Hello"})
    await stores.conversations.put_partial(OWNER, 7, {"seq": 7, "role": "assistant", "content": "x"})
    conv = await stores.conversations.load(OWNER)
    assert conv.partials == {4: {"seq": 4, "role": "assistant", "content": "Hello"},
                             7: {"seq": 7, "role": "assistant", "content": "x"}}
    await stores.conversations.put_partial(OWNER, 4, None)
    await stores.conversations.put_partial(OWNER, 99, None)   # clearing a missing one is fine
    assert list((await stores.conversations.load(OWNER)).partials) == [7]


async def test_truncate_from_drops_messages_and_partials_at_or_after(stores: Stores):
    for seq in range(6):
        await stores.conversations.append_message(OWNER, msg(seq))
    await stores.conversations.put_partial(OWNER, 2, {"seq": 2, "role": "assistant", "content": "p2"})
    await stores.conversations.put_partial(OWNER, 6, {"seq": 6, "role": "assistant", "content": "p6"})
    await stores.conversations.put_cursor(OWNER, {"next_seq": 6})
    await stores.conversations.truncate_from(OWNER, 3)
    conv = await stores.conversations.load(OWNER)
    assert [m["seq"] for m in conv.messages] == [0, 1, 2]
    assert list(conv.partials) == [2]
    assert conv.cursor == {"next_seq": 6}   # the cursor is the caller's to rewrite


async def test_replace_swaps_messages_partials_and_cursor(stores: Stores):
    for seq in range(4):
        await stores.conversations.append_message(OWNER, msg(seq))
    await stores.conversations.put_partial(OWNER, 4, {"seq": 4, "role": "assistant", "content": "p"})
    await stores.conversations.put_meta(OWNER, {"system_prompt": "keep"})
    await stores.conversations.replace(OWNER, [msg(10, content="summary"), msg(11)], {"next_seq": 12})
    conv = await stores.conversations.load(OWNER)
    assert [(m["seq"], m["content"]) for m in conv.messages] == [(10, "summary"), (11, "m11")]
    assert conv.partials == {}
    assert conv.cursor == {"next_seq": 12}
    assert conv.meta == {"system_prompt": "keep"}
    await stores.conversations.replace(OWNER, [], {"next_seq": 0})
    assert (await stores.conversations.load(OWNER)).messages == []


async def test_copy_gives_an_independent_copy(stores: Stores):
    for seq in range(3):
        await stores.conversations.append_message(OWNER, msg(seq))
    await stores.conversations.put_partial(OWNER, 3, {"seq": 3, "role": "assistant", "content": "p"})
    await stores.conversations.put_cursor(OWNER, {"next_seq": 3})
    await stores.conversations.put_meta(OWNER, {"system_prompt": "s"})
    await stores.conversations.append_message("queen:s2", msg(0, content="replaced"))
    await stores.conversations.copy(OWNER, "queen:s2")
    source = await stores.conversations.load(OWNER)
    copied = await stores.conversations.load("queen:s2")
    assert copied == source
    await stores.conversations.append_message("queen:s2", msg(3))
    assert len((await stores.conversations.load(OWNER)).messages) == 3
    await stores.conversations.copy("nobody", "queen:s2")    # copying nothing leaves nothing
    assert (await stores.conversations.load("queen:s2")).meta is None


async def test_delete_removes_everything_of_one_owner(stores: Stores):
    await stores.conversations.append_message(OWNER, msg(0))
    await stores.conversations.put_partial(OWNER, 1, {"seq": 1, "role": "assistant", "content": "p"})
    await stores.conversations.put_cursor(OWNER, {"next_seq": 1})
    await stores.conversations.put_meta(OWNER, {"system_prompt": "s"})
    await stores.conversations.append_message("queen:other", msg(0))
    await stores.conversations.delete(OWNER)
    conv = await stores.conversations.load(OWNER)
    assert (conv.meta, conv.messages, conv.cursor, conv.partials) == (None, [], None, {})
    assert len((await stores.conversations.load("queen:other")).messages) == 1
    await stores.conversations.delete("nobody")


async def test_sqlite_conversation_survives_reopen(tmp_path: Path):
    path = tmp_path / "apiary.db"
    first = await SqliteStores.open(path)
    await first.conversations.append_message(OWNER, msg(0))
    await first.conversations.put_cursor(OWNER, {"next_seq": 1})
    await first.conversations.put_partial(OWNER, 1, {"seq": 1, "role": "assistant", "content": "half"})
    await first.aclose()
    second = await SqliteStores.open(path)
    try:
        conv = await second.conversations.load(OWNER)
        assert [m["content"] for m in conv.messages] == ["m0"]
        assert conv.cursor == {"next_seq": 1}
        assert conv.partials[1]["content"] == "half"
    finally:
        await second.aclose()


# -- recordings ----------------------------------------------------------------------------------

async def test_recordings_put_get_per_run(stores: Stores):
    rec = stores.recordings
    await rec.put("worker:a", "r1", 1, "model:0", {"text": "hi", "tool_calls": []})
    await rec.put("worker:a", "r1", 1, "tool:c1", {"content": "ok", "is_error": False})
    await rec.put("worker:a", "r1", 2, "model:0", {"text": "second"})
    await rec.put("worker:a", "r2", 1, "model:0", {"text": "other run"})
    run = await rec.get_run("worker:a", "r1")
    assert run == {(1, "model:0"): {"text": "hi", "tool_calls": []},
                   (1, "tool:c1"): {"content": "ok", "is_error": False},
                   (2, "model:0"): {"text": "second"}}
    assert await rec.get_run("worker:a", "r2") == {(1, "model:0"): {"text": "other run"}}
    assert await rec.get_run("worker:a", "nope") == {}


async def test_recordings_overwrite_and_value_kinds(stores: Stores):
    rec = stores.recordings
    await rec.put("o", "r", 0, "k", {"v": 1})
    await rec.put("o", "r", 0, "k", ["list", 2, None])
    await rec.put("o", "r", 0, "s", "plain string")
    assert await rec.get_run("o", "r") == {(0, "k"): ["list", 2, None], (0, "s"): "plain string"}


async def test_recordings_delete_one_owner(stores: Stores):
    rec = stores.recordings
    await rec.put("o1", "r", 0, "k", 1)
    await rec.put("o1", "r2", 0, "k", 2)
    await rec.put("o2", "r", 0, "k", 3)
    await rec.delete("o1")
    assert await rec.get_run("o1", "r") == {}
    assert await rec.get_run("o1", "r2") == {}
    assert await rec.get_run("o2", "r") == {(0, "k"): 3}
