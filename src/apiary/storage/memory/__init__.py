"""Reference backend: plain dicts. Readable spec the other backends follow; loses all on exit."""

from __future__ import annotations

import copy
from typing import Any

from apiary.core.events import Event, StoredEvent
from apiary.core.messages import JsonObject
from apiary.storage.base import Conversation, ConversationStore, EventLog, RecordingStore, Stores


class MemoryEventLog(EventLog):
    def __init__(self) -> None:
        self._logs: dict[str, list[StoredEvent]] = {}

    async def append(self, session_id: str, event: Event) -> StoredEvent:
        log = self._logs.setdefault(session_id, [])
        stored = StoredEvent.of(len(log) + 1, event)
        log.append(stored)
        return stored

    async def append_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]:
        return [await self.append(session_id, e) for e in events]

    async def read(self, session_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        rows = self._logs.get(session_id, [])[max(after, 0):]
        return rows[:limit] if limit is not None else list(rows)

    async def read_tail(self, session_id: str, limit: int) -> list[StoredEvent]:
        return list(self._logs.get(session_id, [])[-limit:]) if limit > 0 else []

    async def last_id(self, session_id: str) -> int:
        return len(self._logs.get(session_id, []))

    async def delete_session(self, session_id: str) -> None:
        self._logs.pop(session_id, None)

    async def copy_session(self, source: str, target: str) -> None:
        self._logs[target] = list(self._logs.get(source, []))


class MemoryConversationStore(ConversationStore):
    def __init__(self) -> None:
        self._convs: dict[str, Conversation] = {}

    def _get(self, owner: str) -> Conversation:
        return self._convs.setdefault(owner, Conversation())

    async def load(self, owner: str) -> Conversation:
        return copy.deepcopy(self._convs.get(owner, Conversation()))

    async def append_message(self, owner: str, message: JsonObject) -> None:
        conv = self._get(owner)
        conv.messages = [m for m in conv.messages if m["seq"] != message["seq"]]
        conv.messages.append(copy.deepcopy(message))
        conv.messages.sort(key=lambda m: m["seq"])

    async def put_cursor(self, owner: str, cursor: JsonObject) -> None:
        self._get(owner).cursor = copy.deepcopy(cursor)

    async def put_meta(self, owner: str, meta: JsonObject) -> None:
        self._get(owner).meta = copy.deepcopy(meta)

    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        partials = self._get(owner).partials
        if partial is None:
            partials.pop(seq, None)
        else:
            partials[seq] = copy.deepcopy(partial)

    async def truncate_from(self, owner: str, seq: int) -> None:
        conv = self._get(owner)
        conv.messages = [m for m in conv.messages if m["seq"] < seq]
        conv.partials = {s: p for s, p in conv.partials.items() if s < seq}

    async def replace(self, owner: str, messages: list[JsonObject], cursor: JsonObject) -> None:
        conv = self._get(owner)
        conv.messages = copy.deepcopy(messages)
        conv.partials = {}
        conv.cursor = copy.deepcopy(cursor)

    async def copy(self, source: str, target: str) -> None:
        self._convs[target] = copy.deepcopy(self._convs.get(source, Conversation()))

    async def delete(self, owner: str) -> None:
        self._convs.pop(owner, None)


class MemoryRecordingStore(RecordingStore):
    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], dict[tuple[int, str], Any]] = {}

    async def put(self, owner: str, run_id: str, step: int, key: str, value: Any) -> None:
        self._runs.setdefault((owner, run_id), {})[(step, key)] = copy.deepcopy(value)

    async def get_run(self, owner: str, run_id: str) -> dict[tuple[int, str], Any]:
        return copy.deepcopy(self._runs.get((owner, run_id), {}))

    async def delete(self, owner: str) -> None:
        for key in [k for k in self._runs if k[0] == owner]:
            del self._runs[key]


class MemoryStores(Stores):
    def __init__(self) -> None:
        self.events = MemoryEventLog()
        self.conversations = MemoryConversationStore()
        self.recordings = MemoryRecordingStore()

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
