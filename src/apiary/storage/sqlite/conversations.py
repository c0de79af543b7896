"""Conversations and recordings in apiary.db, keyed by owner (``queen:<sid>``, ``worker:...``)."""

from __future__ import annotations

import json
from typing import Any

from apiary.core.jsonfile import dumps
from apiary.core.messages import JsonObject
from apiary.storage.base import Conversation, ConversationStore, RecordingStore
from apiary.storage.sqlite.database import Database

_PUT_CURSOR = (
    "INSERT INTO conv_state (owner, cursor) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET cursor = excluded.cursor"
)


def _dump(value: Any) -> str:
    return dumps(value)


class SqliteConversationStore(ConversationStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, owner: str) -> Conversation:
        states, messages, partials = await self._db.read_many([
            ("SELECT meta, cursor FROM conv_state WHERE owner = ?", (owner,)),
            ("SELECT body FROM conv_messages WHERE owner = ? ORDER BY seq", (owner,)),
            ("SELECT seq, body FROM conv_partials WHERE owner = ?", (owner,))])
        state = states[0] if states else None
        return Conversation(
            meta=json.loads(state[0]) if state and state[0] else None,
            messages=[json.loads(r[0]) for r in messages],
            cursor=json.loads(state[1]) if state and state[1] else None,
            partials={int(r[0]): json.loads(r[1]) for r in partials},
        )

    async def append_message(self, owner: str, message: JsonObject) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO conv_messages (owner, seq, body) VALUES (?, ?, ?)",
            (owner, message["seq"], _dump(message)),
        )

    async def put_cursor(self, owner: str, cursor: JsonObject) -> None:
        await self._db.execute(
            _PUT_CURSOR,
            (owner, _dump(cursor)),
        )

    async def put_meta(self, owner: str, meta: JsonObject) -> None:
        await self._db.execute(
            "INSERT INTO conv_state (owner, meta) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET meta = excluded.meta",
            (owner, _dump(meta)),
        )

    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        if partial is None:
            await self._db.execute("DELETE FROM conv_partials WHERE owner = ? AND seq = ?", (owner, seq))
        else:
            await self._db.execute(
                "INSERT OR REPLACE INTO conv_partials (owner, seq, body) VALUES (?, ?, ?)", (owner, seq, _dump(partial))
            )

    async def truncate_from(self, owner: str, seq: int) -> None:
        await self._db.transaction(
            [
                ("DELETE FROM conv_messages WHERE owner = ? AND seq >= ?", (owner, seq)),
                ("DELETE FROM conv_partials WHERE owner = ? AND seq >= ?", (owner, seq)),
            ]
        )

    async def replace(self, owner: str, messages: list[JsonObject], cursor: JsonObject) -> None:
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM conv_messages WHERE owner = ?", (owner,)),
            ("DELETE FROM conv_partials WHERE owner = ?", (owner,)),
        ]
        statements += [
            ("INSERT INTO conv_messages (owner, seq, body) VALUES (?, ?, ?)", (owner, m["seq"], _dump(m)))
            for m in messages
        ]
        statements.append(
            (
                _PUT_CURSOR,
                (owner, _dump(cursor)),
            )
        )
        await self._db.transaction(statements)

    async def copy(self, source: str, target: str) -> None:
        await self._db.transaction(
            [
                ("DELETE FROM conv_messages WHERE owner = ?", (target,)),
                ("DELETE FROM conv_partials WHERE owner = ?", (target,)),
                ("DELETE FROM conv_state WHERE owner = ?", (target,)),
                ("INSERT INTO conv_messages SELECT ?, seq, body FROM conv_messages WHERE owner = ?", (target, source)),
                ("INSERT INTO conv_partials SELECT ?, seq, body FROM conv_partials WHERE owner = ?", (target, source)),
                ("INSERT INTO conv_state SELECT ?, meta, cursor FROM conv_state WHERE owner = ?", (target, source)),
            ]
        )

    async def delete(self, owner: str) -> None:
        await self._db.transaction(
            [
                ("DELETE FROM conv_messages WHERE owner = ?", (owner,)),
                ("DELETE FROM conv_partials WHERE owner = ?", (owner,)),
                ("DELETE FROM conv_state WHERE owner = ?", (owner,)),
            ]
        )


class SqliteRecordingStore(RecordingStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, owner: str, run_id: str, step: int, key: str, value: Any) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO recordings (owner, run_id, step, key, body) VALUES (?, ?, ?, ?, ?)",
            (owner, run_id, step, key, _dump(value)),
        )

    async def get_run(self, owner: str, run_id: str) -> dict[tuple[int, str], Any]:
        rows = await self._db.fetchall(
            "SELECT step, key, body FROM recordings WHERE owner = ? AND run_id = ?", (owner, run_id)
        )
        return {(int(r[0]), str(r[1])): json.loads(r[2]) for r in rows}

    async def delete(self, owner: str) -> None:
        await self._db.execute("DELETE FROM recordings WHERE owner = ?", (owner,))
