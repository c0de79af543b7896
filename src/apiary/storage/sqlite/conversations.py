"""Conversations and recordings in apiary.db, keyed by owner (``queen:<sid>``, ``worker:...``).

``write_many`` stores several writes of a loop step (messages, recordings, partials, the cursor) as
one atomic write: the step's writes land together or not at all, in the order given. Every write
goes through the database's writer (writer.py), so it shares a commit and a thread round trip with
the event appends and the other loops' writes queued beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from apiary.core.jsonfile import dumps
from apiary.core.messages import JsonObject
from apiary.storage.base import Conversation, ConversationStore, RecordingStore
from apiary.storage.sqlite.database import Database

_PUT_CURSOR = (
    "INSERT INTO conv_state (owner, cursor) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET cursor = excluded.cursor"
)


_PUT_MESSAGE = "INSERT OR REPLACE INTO conv_messages (owner, seq, body) VALUES (?, ?, ?)"
_PUT_PARTIAL = "INSERT OR REPLACE INTO conv_partials (owner, seq, body) VALUES (?, ?, ?)"
_DELETE_PARTIAL = "DELETE FROM conv_partials WHERE owner = ? AND seq = ?"
_PUT_RECORDING = "INSERT OR REPLACE INTO recordings (owner, run_id, step, key, body) VALUES (?, ?, ?, ?, ?)"

_PUT_META = "INSERT INTO conv_state (owner, meta) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET meta = excluded.meta"

# A write of ``write_many``: ("message", owner, message) | ("partial", owner, seq, partial or None) |
# ("cursor", owner, cursor) | ("meta", owner, meta) | ("delete", owner) (the conversation, as
# ``delete``) | ("record", owner, run_id, step, key, value).
WriteOp = tuple[Any, ...]


def _dump(value: Any) -> str:
    return dumps(value)


def _statements(op: WriteOp) -> list[tuple[str, tuple[Any, ...]]]:
    kind, owner = op[0], op[1]
    if kind == "message":
        return [(_PUT_MESSAGE, (owner, op[2]["seq"], _dump(op[2])))]
    if kind == "partial":
        if op[3] is None:
            return [(_DELETE_PARTIAL, (owner, op[2]))]
        return [(_PUT_PARTIAL, (owner, op[2], _dump(op[3])))]
    if kind == "cursor":
        return [(_PUT_CURSOR, (owner, _dump(op[2])))]
    if kind == "meta":
        return [(_PUT_META, (owner, _dump(op[2])))]
    if kind == "delete":
        return [(f"DELETE FROM {table} WHERE owner = ?", (owner,)) for table in ("conv_messages", "conv_partials",
                                                                                   "conv_state")]
    if kind == "record":
        return [(_PUT_RECORDING, (owner, op[2], op[3], op[4], _dump(op[5])))]
    raise ValueError(f"unknown write {kind!r}")


class SqliteConversationStore(ConversationStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def writer_db(self) -> Database:
        """The database whose writer stores this store's writes (``EventLog.orders_before``)."""
        return self._db

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

    def batches_with(self, recordings: RecordingStore) -> bool:
        """True when ``write_many`` can take ``recordings``' writes too (same database)."""
        return isinstance(recordings, SqliteRecordingStore) and recordings._db is self._db

    async def write_many(self, ops: Sequence[WriteOp]) -> None:
        """Several writes (see ``WriteOp``; recordings only when ``batches_with``) as one transaction."""
        await self._db.writer.write([statement for op in ops for statement in _statements(op)])

    async def append_message(self, owner: str, message: JsonObject) -> None:
        await self._db.writer.write(_statements(("message", owner, message)))

    async def put_cursor(self, owner: str, cursor: JsonObject) -> None:
        await self._db.writer.write(_statements(("cursor", owner, cursor)))

    async def put_meta(self, owner: str, meta: JsonObject) -> None:
        await self._db.writer.write(_statements(("meta", owner, meta)))

    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        await self._db.writer.write(_statements(("partial", owner, seq, partial)))

    async def truncate_from(self, owner: str, seq: int) -> None:
        await self._db.writer.write([
            ("DELETE FROM conv_messages WHERE owner = ? AND seq >= ?", (owner, seq)),
            ("DELETE FROM conv_partials WHERE owner = ? AND seq >= ?", (owner, seq)),
        ])

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
        await self._db.writer.write(statements)

    async def copy(self, source: str, target: str) -> None:
        await self._db.writer.write([
            ("DELETE FROM conv_messages WHERE owner = ?", (target,)),
            ("DELETE FROM conv_partials WHERE owner = ?", (target,)),
            ("DELETE FROM conv_state WHERE owner = ?", (target,)),
            ("INSERT INTO conv_messages SELECT ?, seq, body FROM conv_messages WHERE owner = ?", (target, source)),
            ("INSERT INTO conv_partials SELECT ?, seq, body FROM conv_partials WHERE owner = ?", (target, source)),
            ("INSERT INTO conv_state SELECT ?, meta, cursor FROM conv_state WHERE owner = ?", (target, source)),
        ])

    async def delete(self, owner: str) -> None:
        await self._db.writer.write(_statements(("delete", owner)))


class SqliteRecordingStore(RecordingStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, owner: str, run_id: str, step: int, key: str, value: Any) -> None:
        await self._db.writer.write(_statements(("record", owner, run_id, step, key, value)))

    async def get_run(self, owner: str, run_id: str) -> dict[tuple[int, str], Any]:
        rows = await self._db.fetchall(
            "SELECT step, key, body FROM recordings WHERE owner = ? AND run_id = ?", (owner, run_id)
        )
        return {(int(r[0]), str(r[1])): json.loads(r[2]) for r in rows}

    async def delete(self, owner: str) -> None:
        await self._db.writer.write([("DELETE FROM recordings WHERE owner = ?", (owner,))])
