"""Every write to apiary.db, in order, in groups: one transaction and one thread call per batch.

Writes are queued (``submit``) and one writer task sends everything queued as one ``BEGIN IMMEDIATE
… COMMIT`` in a single call into the connection's thread, each write in a savepoint of its own (one
that fails is undone alone, the others still commit). While a batch is in flight the next one
collects. So a loop step's event appends and conversation writes, and those of every other loop in
the process, share a commit and a round trip instead of paying one each: on this 2-core machine a
thread round trip costs 50-100 µs and an autocommit ~30-60 µs, an insert inside a transaction 3-4 µs.

Order is the contract: a write is committed no later than any write submitted after it, and each
write's ``done`` runs on the loop in submission order once its batch is settled. The event log
relies on both (ids assigned in the thread, in queue order; fan-out in id order), and so do callers
that post events without awaiting them: the next write they await covers them too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from apiary.storage.sqlite.database import Database

Statements = list[tuple[str, tuple[Any, ...]]]


class Write(Protocol):
    """One write of a batch. ``run`` executes in the connection's thread inside the batch's
    transaction (``batch`` is scratch state shared by the batch's writes, e.g. event ids); ``done``
    runs on the loop, in order, with ``run``'s result or its error."""

    def run(self, conn: sqlite3.Connection, batch: dict[str, Any]) -> Any: ...

    def done(self, ok: bool, value: Any) -> None: ...


class StatementsWrite:
    """Plain statements, resolved as a future."""

    __slots__ = ("future", "statements")

    def __init__(self, statements: Statements, future: asyncio.Future[None]) -> None:
        self.statements = statements
        self.future = future

    def run(self, conn: sqlite3.Connection, batch: dict[str, Any]) -> None:
        for sql, params in self.statements:
            conn.execute(sql, params)

    def done(self, ok: bool, value: Any) -> None:
        settle(self.future, ok, value)


def settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value if isinstance(value, BaseException) else RuntimeError(str(value)))


def _run_batch(conn: sqlite3.Connection, writes: list[Write]) -> list[tuple[bool, Any]]:
    """In the connection's thread: the batch as one transaction, one savepoint per write."""
    batch: dict[str, Any] = {}
    outcomes: list[tuple[bool, Any]] = []
    lone = len(writes) == 1
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            if lone:   # no savepoint needed: a failure rolls the whole (one-write) batch back
                outcomes.append((True, write.run(conn, batch)))
                continue
            conn.execute("SAVEPOINT apiary_write")
            try:
                outcomes.append((True, write.run(conn, batch)))
            except Exception as exc:
                conn.execute("ROLLBACK TO apiary_write")
                outcomes.append((False, exc))
            conn.execute("RELEASE apiary_write")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


class Writer:
    """The write queue of one database (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[Write] = []
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.batches = 0   # batches sent (for tests and benchmarks: writes per commit)
        self.writes = 0

    def submit(self, write: Write) -> None:
        if self.closed:
            write.done(False, RuntimeError("database closed"))
            return
        self._queue.append(write)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="apiary-db-writer")

    async def write(self, statements: Statements) -> None:
        """``statements`` as one atomic write, grouped with whatever else is queued."""
        if not statements:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submit(StatementsWrite(statements, future))
        # Not shielded: a cancelled caller cancels only its future; the write is queued and runs.
        await future

    async def _drain(self) -> None:
        writes: list[Write] = []
        try:
            while self._queue:
                # One turn of the loop before taking the queue: the tasks already scheduled (a
                # loop's delta publisher, its next write) join this batch instead of the next one.
                await asyncio.sleep(0)
                writes, self._queue = self._queue, []
                self.batches += 1
                self.writes += len(writes)
                try:
                    outcomes = await self.db.run(lambda conn: _run_batch(conn, writes))  # noqa: B023
                except Exception as exc:
                    outcomes = [(False, exc)] * len(writes)
                for write, (ok, value) in zip(writes, outcomes, strict=True):
                    write.done(ok, value)
                writes = []
        finally:
            self._task = None
            # Only when this task itself was cancelled (shutdown): nobody may wait forever.
            for write in [*writes, *self._queue]:
                write.done(False, RuntimeError("database closed"))
            self._queue = []

    async def aclose(self) -> None:
        """Refuse new writes, and let what is queued commit (a producer still writing cannot keep
        the close waiting)."""
        self.closed = True
        while self._task is not None:
            await asyncio.shield(self._task)
