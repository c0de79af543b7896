"""Conversations and recordings in apiary.db, keyed by owner (``queen:<sid>``, ``worker:...``).

``write_many`` stores several writes of a loop step (messages, recordings, partials, the cursor) as
one transaction in one call into the connection's thread, instead of one autocommit round trip
each: the step's writes land together or not at all, in the order given.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
T = TypeVar("T")


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


Statements = list[tuple[str, tuple[Any, ...]]]


def _run_statements(conn: sqlite3.Connection, statements: Statements) -> None:
    """In the connection's thread: one statement in autocommit, several as one ``BEGIN IMMEDIATE``
    transaction."""
    if len(statements) == 1:
        conn.execute(*statements[0])
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _run_groups(conn: sqlite3.Connection, groups: list[Statements]) -> list[BaseException | None]:
    """In the connection's thread: several callers' writes in one transaction, each in a savepoint of
    its own, so one that fails is undone alone and the others still commit. Its error per group."""
    if len(groups) == 1:
        try:
            _run_statements(conn, groups[0])
        except Exception as exc:
            return [exc]
        return [None]
    outcomes: list[BaseException | None] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statements in groups:
            conn.execute("SAVEPOINT apiary_write")
            try:
                for sql, params in statements:
                    conn.execute(sql, params)
            except Exception as exc:
                conn.execute("ROLLBACK TO apiary_write")
                outcomes.append(exc)
            else:
                outcomes.append(None)
            conn.execute("RELEASE apiary_write")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _read_statements(conn: sqlite3.Connection, queries: Statements) -> list[list[Any]]:
    """In the connection's thread: every query's rows, from one read transaction (one snapshot)."""
    conn.execute("BEGIN")
    try:
        return [conn.execute(sql, params).fetchall() for sql, params in queries]
    finally:
        conn.execute("COMMIT")


async def _in_thread(db: Database, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(sqlite3 connection)`` in aiosqlite's thread, as one call.

    The database's lock is held only while the call is queued, not until it has run: aiosqlite's
    thread runs its calls one at a time in the order queued, so the call can neither land inside a
    transaction another task holds the lock for, nor be overtaken by what is queued after it; and
    the connection is free for the next task during the round trip (with many loops on one
    database the round trips, not the statements, were what everyone queued for)."""
    conn = db.conn
    tx = getattr(conn, "_tx", None)
    async with db._lock:
        if tx is None or not hasattr(tx, "put_nowait"):   # not the aiosqlite we know: the public way
            return await conn._execute(lambda: fn(conn._conn))  # type: ignore[no-any-return]
        if not getattr(conn, "_running", False) or getattr(conn, "_connection", None) is None:
            raise ValueError("Connection closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        tx.put_nowait((future, lambda: fn(conn._conn)))
    return await future


class _GroupCommit:
    """The conversation and recording writes of one database, committed in groups.

    A write that finds nothing of ours in flight is sent at once, as one call. One that arrives
    while writes are in flight or the connection is taken (other loops writing) is queued; one
    writer task sends everything queued as one transaction (savepoints keep each write atomic on
    its own) as soon as the previous batch is back, so many loops share a commit and a round trip
    into the connection's thread instead of queueing for one each."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.queue: list[tuple[Statements, asyncio.Future[None]]] = []
        self.writer: asyncio.Task[None] | None = None
        self.in_flight = 0

    async def write(self, statements: Statements) -> None:
        if self.writer is None and not self.in_flight and not self.db._lock.locked():
            self.in_flight += 1
            try:
                await _in_thread(self.db, lambda conn: _run_statements(conn, statements))
            finally:
                self.in_flight -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append((statements, future))
        if self.writer is None:
            self.writer = asyncio.create_task(self._drain(), name="conversation-writer")
        await asyncio.shield(future)

    async def _drain(self) -> None:
        batch: list[tuple[Statements, asyncio.Future[None]]] = []
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                groups = [statements for statements, _ in batch]
                self.in_flight += 1
                try:
                    outcomes = await _in_thread(self.db, lambda conn: _run_groups(conn, groups))  # noqa: B023
                except Exception as exc:
                    outcomes = [exc] * len(batch)
                finally:
                    self.in_flight -= 1
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
        finally:
            self.writer = None
            # Only when this task itself was cancelled (shutdown): nobody may wait forever.
            for _, future in [*batch, *self.queue]:
                if not future.done():
                    future.set_exception(RuntimeError("conversation store closed"))
            self.queue = []


_GROUPS: weakref.WeakKeyDictionary[Database, _GroupCommit] = weakref.WeakKeyDictionary()


async def write_statements(db: Database, statements: Statements) -> None:
    """One atomic write of ``statements`` (a lone statement stays one autocommit statement), as one
    call into aiosqlite's thread, alone or grouped with other waiting writes (``_GroupCommit``)."""
    if not statements:
        return
    group = _GROUPS.get(db)
    if group is None:
        group = _GROUPS[db] = _GroupCommit(db)
    await group.write(statements)


async def read_statements(db: Database, queries: Statements) -> list[list[Any]]:
    """``Database.read_many`` as one call into aiosqlite's thread instead of two per query."""
    return await _in_thread(db, lambda conn: _read_statements(conn, queries))


class SqliteConversationStore(ConversationStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, owner: str) -> Conversation:
        states, messages, partials = await read_statements(self._db, [
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
        await write_statements(self._db, [statement for op in ops for statement in _statements(op)])

    async def append_message(self, owner: str, message: JsonObject) -> None:
        await write_statements(self._db, _statements(("message", owner, message)))

    async def put_cursor(self, owner: str, cursor: JsonObject) -> None:
        await write_statements(self._db, _statements(("cursor", owner, cursor)))

    async def put_meta(self, owner: str, meta: JsonObject) -> None:
        await write_statements(self._db, _statements(("meta", owner, meta)))

    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        await write_statements(self._db, _statements(("partial", owner, seq, partial)))

    async def truncate_from(self, owner: str, seq: int) -> None:
        await write_statements(self._db, [
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
        await write_statements(self._db, statements)

    async def copy(self, source: str, target: str) -> None:
        await write_statements(self._db, [
            ("DELETE FROM conv_messages WHERE owner = ?", (target,)),
            ("DELETE FROM conv_partials WHERE owner = ?", (target,)),
            ("DELETE FROM conv_state WHERE owner = ?", (target,)),
            ("INSERT INTO conv_messages SELECT ?, seq, body FROM conv_messages WHERE owner = ?", (target, source)),
            ("INSERT INTO conv_partials SELECT ?, seq, body FROM conv_partials WHERE owner = ?", (target, source)),
            ("INSERT INTO conv_state SELECT ?, meta, cursor FROM conv_state WHERE owner = ?", (target, source)),
        ])

    async def delete(self, owner: str) -> None:
        await write_statements(self._db, _statements(("delete", owner)))


class SqliteRecordingStore(RecordingStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, owner: str, run_id: str, step: int, key: str, value: Any) -> None:
        await write_statements(self._db, _statements(("record", owner, run_id, step, key, value)))

    async def get_run(self, owner: str, run_id: str) -> dict[tuple[int, str], Any]:
        rows = await self._db.fetchall(
            "SELECT step, key, body FROM recordings WHERE owner = ? AND run_id = ?", (owner, run_id)
        )
        return {(int(r[0]), str(r[1])): json.loads(r[2]) for r in rows}

    async def delete(self, owner: str) -> None:
        await write_statements(self._db, [("DELETE FROM recordings WHERE owner = ?", (owner,))])
