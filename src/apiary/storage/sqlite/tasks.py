"""``SqliteTaskQueue``: the colony task queue (``progress_db``) for asyncio code.

One connection per queue, used from one dedicated thread: calls run FIFO and never block the event
loop. Measured on a 2-core machine: opening a connection per call (open + pragmas) alone capped
claims near 2,700/s before any thread hop, so the connection is kept; and results go back to the
loop once per batch of finished calls (one wake-up, not one per call), which under concurrent
callers roughly doubles the rate over a plain executor (about 6,000 -> 12,000+ claims/s).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from apiary.core.errors import StorageError
from apiary.storage.base import TaskQueue
from apiary.storage.sqlite import progress_db as pdb

T = TypeVar("T")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in results:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class _SerialThread:
    """A thread running submitted calls in order, returning each batch's results in one loop wake-up."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._started = False
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if not self._started:
            with self._start_lock:
                if not self._started:
                    self._thread.start()
                    self._started = True
        self._jobs.put((loop, fut, fn))
        return fut

    def stop(self) -> None:
        """Let the calls already queued finish, then end the thread."""
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while True:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
            stop = False
            for job in batch:
                if job is None:
                    stop = True
                    continue
                loop, fut, fn = job
                try:
                    result: tuple[asyncio.Future[Any], bool, Any] = (fut, True, fn())
                except BaseException as exc:  # handed to the awaiting coroutine
                    result = (fut, False, exc)
                by_loop.setdefault(loop, []).append(result)
            for loop, results in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, results)
                except RuntimeError:  # that loop is closed: nobody is waiting any more
                    pass
            if stop:
                return


class SqliteTaskQueue(TaskQueue):
    def __init__(self, db_path: Path | str) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False  # set in the worker thread, under the lock
        self._closing = False  # set on the event loop by close()
        self._thread = _SerialThread(f"apiary-progress-db:{self.db_path.parent.parent.name}")
        weakref.finalize(self, self._thread.stop)  # a queue dropped without close() ends its thread

    async def __aenter__(self) -> SqliteTaskQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"task queue {self.db_path} is closed")
        if self._conn is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = pdb.connect(self.db_path, check_same_thread=False)
            try:
                pdb.ensure_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            try:
                return fn(self._connection(), *args, **kwargs)
            except sqlite3.Error as exc:
                raise StorageError(f"{self.db_path}: {exc}") from exc

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        if self._closing:
            raise StorageError(f"task queue {self.db_path} is closed")
        return self._thread.submit(functools.partial(self._call, fn, *args, **kwargs))

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._submit(fn, *args, **kwargs)

    # -- queue ---------------------------------------------------------------------------------

    async def enqueue(self, tasks: list[dict[str, Any]], source: str = pdb.ENQUEUE_SOURCE) -> list[str]:
        """Seed tasks (all or nothing); ids in input order."""
        return await self._run(pdb.seed_tasks, tasks, source)

    async def claim(self, worker_id: str, task_id: str | None = None) -> pdb.ClaimedTask | None:
        fut = self._submit(pdb.claim, worker_id, task_id=task_id)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The claim may still commit in the thread; give such a row back rather than strand it
            # until stale reclaim (15 minutes) notices.
            fut.add_done_callback(functools.partial(self._release_orphan, worker_id))
            raise

    def _release_orphan(self, worker_id: str, fut: asyncio.Future[pdb.ClaimedTask | None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        claimed = fut.result()
        if claimed is not None and not self._closing:
            self._thread.submit(functools.partial(self._call, pdb.release, claimed.id, worker_id))

    async def heartbeat(self, task_id: str, worker_id: str) -> bool:
        return await self._run(pdb.heartbeat, task_id, worker_id)

    async def start(self, task_id: str, worker_id: str) -> bool:
        return await self._run(pdb.start, task_id, worker_id)

    async def complete(self, task_id: str, worker_id: str) -> bool:
        return await self._run(pdb.complete, task_id, worker_id)

    async def fail(self, task_id: str, worker_id: str, error: str) -> bool:
        return await self._run(pdb.fail, task_id, worker_id, error)

    async def release(self, task_id: str, worker_id: str) -> bool:
        return await self._run(pdb.release, task_id, worker_id)

    async def remove(self, task_ids: list[str]) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            with pdb.write_transaction(conn):
                conn.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i in task_ids])

        await self._run(delete)

    async def reclaim_stale(self, stale_claim_s: float) -> int:
        return await self._run(pdb.reclaim_stale, stale_claim_s=stale_claim_s)

    async def set_step_status(
        self,
        task_id: str,
        seq: int,
        status: str,
        *,
        worker_id: str | None = None,
        evidence: str | None = None,
    ) -> bool:
        return await self._run(pdb.set_step_status, task_id, seq, status, worker_id=worker_id, evidence=evidence)

    async def mark_sop_done(self, task_id: str, key: str, worker_id: str, note: str | None = None) -> bool:
        return await self._run(pdb.mark_sop_done, task_id, key, worker_id, note)

    # -- reads ---------------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        return await self._run(pdb.task_counts)

    async def snapshot(self, limit: int = 500) -> list[dict[str, Any]]:
        """Snapshot items (part A 3.7 ``items``) in claim order."""
        return await self._run(pdb.snapshot_items, limit)

    async def progress(self, limit: int = 500) -> dict[str, Any]:
        """``{"tasks": counts, "items": [...]}`` read consistently in one transaction."""
        return await self._run(pdb.progress_snapshot, limit)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        return await self._run(pdb.get_task, task_id)

    async def events(self, task_id: str) -> list[dict[str, Any]]:
        return await self._run(pdb.task_events, task_id)

    # -- lifecycle -----------------------------------------------------------------------------

    def _close_sync(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def close(self) -> None:
        """Close after the calls already queued have run; idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            await self._thread.submit(self._close_sync)
        finally:
            self._thread.stop()
