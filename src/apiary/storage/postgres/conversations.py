"""Conversations and recordings on PostgreSQL (the same contract as the SQLite ones)."""

from __future__ import annotations

import json
from typing import Any

from apiary.core.jsonfile import dumps
from apiary.core.messages import JsonObject
from apiary.storage.base import Conversation, ConversationStore, RecordingStore
from apiary.storage.postgres.database import PgDatabase

_PUT_CURSOR = ("INSERT INTO apiary_conv_state (owner, cursor) VALUES (%s, %s) ON CONFLICT (owner)"
               " DO UPDATE SET cursor = EXCLUDED.cursor")


def _dump(value: Any) -> str:
    return dumps(value)


class PgConversationStore(ConversationStore):
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def load(self, owner: str) -> Conversation:
        async with self._db.pool.connection() as conn, conn.transaction():   # one consistent snapshot
            state = await (await conn.execute("SELECT meta, cursor FROM apiary_conv_state WHERE owner = %s",
                                              (owner,))).fetchone()
            messages = await (await conn.execute(
                "SELECT body FROM apiary_conv_messages WHERE owner = %s ORDER BY seq", (owner,))).fetchall()
            partials = await (await conn.execute(
                "SELECT seq, body FROM apiary_conv_partials WHERE owner = %s", (owner,))).fetchall()
        return Conversation(
            meta=json.loads(state[0]) if state and state[0] else None,
            messages=[json.loads(r[0]) for r in messages],
            cursor=json.loads(state[1]) if state and state[1] else None,
            partials={int(r[0]): json.loads(r[1]) for r in partials})

    async def append_message(self, owner: str, message: JsonObject) -> None:
        await self._db.execute(
            "INSERT INTO apiary_conv_messages (owner, seq, body) VALUES (%s, %s, %s) ON CONFLICT (owner, seq)"
            " DO UPDATE SET body = EXCLUDED.body", (owner, message["seq"], _dump(message)))

    async def put_cursor(self, owner: str, cursor: JsonObject) -> None:
        await self._db.execute(_PUT_CURSOR, (owner, _dump(cursor)))

    async def put_meta(self, owner: str, meta: JsonObject) -> None:
        await self._db.execute("INSERT INTO apiary_conv_state (owner, meta) VALUES (%s, %s) ON CONFLICT (owner)"
                               " DO UPDATE SET meta = EXCLUDED.meta", (owner, _dump(meta)))

    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        if partial is None:
            await self._db.execute("DELETE FROM apiary_conv_partials WHERE owner = %s AND seq = %s", (owner, seq))
        else:
            await self._db.execute(
                "INSERT INTO apiary_conv_partials (owner, seq, body) VALUES (%s, %s, %s) ON CONFLICT (owner, seq)"
                " DO UPDATE SET body = EXCLUDED.body", (owner, seq, _dump(partial)))

    async def truncate_from(self, owner: str, seq: int) -> None:
        await self._db.transaction([
            ("DELETE FROM apiary_conv_messages WHERE owner = %s AND seq >= %s", (owner, seq)),
            ("DELETE FROM apiary_conv_partials WHERE owner = %s AND seq >= %s", (owner, seq))])

    async def replace(self, owner: str, messages: list[JsonObject], cursor: JsonObject) -> None:
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM apiary_conv_messages WHERE owner = %s", (owner,)),
            ("DELETE FROM apiary_conv_partials WHERE owner = %s", (owner,))]
        statements += [("INSERT INTO apiary_conv_messages (owner, seq, body) VALUES (%s, %s, %s)",
                        (owner, m["seq"], _dump(m))) for m in messages]
        statements.append((_PUT_CURSOR, (owner, _dump(cursor))))
        await self._db.transaction(statements)

    async def copy(self, source: str, target: str) -> None:
        await self._db.transaction([
            ("DELETE FROM apiary_conv_messages WHERE owner = %s", (target,)),
            ("DELETE FROM apiary_conv_partials WHERE owner = %s", (target,)),
            ("DELETE FROM apiary_conv_state WHERE owner = %s", (target,)),
            ("INSERT INTO apiary_conv_messages SELECT %s, seq, body FROM apiary_conv_messages WHERE owner = %s",
             (target, source)),
            ("INSERT INTO apiary_conv_partials SELECT %s, seq, body FROM apiary_conv_partials WHERE owner = %s",
             (target, source)),
            ("INSERT INTO apiary_conv_state SELECT %s, meta, cursor FROM apiary_conv_state WHERE owner = %s",
             (target, source))])

    async def delete(self, owner: str) -> None:
        await self._db.transaction([
            ("DELETE FROM apiary_conv_messages WHERE owner = %s", (owner,)),
            ("DELETE FROM apiary_conv_partials WHERE owner = %s", (owner,)),
            ("DELETE FROM apiary_conv_state WHERE owner = %s", (owner,))])


class PgRecordingStore(RecordingStore):
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def put(self, owner: str, run_id: str, step: int, key: str, value: Any) -> None:
        await self._db.execute(
            "INSERT INTO apiary_recordings (owner, run_id, step, key, body) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (owner, run_id, step, key) DO UPDATE SET body = EXCLUDED.body",
            (owner, run_id, step, key, _dump(value)))

    async def get_run(self, owner: str, run_id: str) -> dict[tuple[int, str], Any]:
        rows = await self._db.fetchall(
            "SELECT step, key, body FROM apiary_recordings WHERE owner = %s AND run_id = %s", (owner, run_id))
        return {(int(r[0]), str(r[1])): json.loads(r[2]) for r in rows}

    async def delete(self, owner: str) -> None:
        await self._db.execute("DELETE FROM apiary_recordings WHERE owner = %s", (owner,))
