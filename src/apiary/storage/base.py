"""Storage interfaces. Every method is abstract, so a backend that misses one fails when built.

Invariants every backend keeps (the conformance suite in tests/storage checks them):
- event ids per session start at 1, grow by exactly 1, survive restarts and are never reused;
- ``EventLog.read(after=n)`` returns exactly the events with ids above ``n``, in id order;
- conversation writes are atomic per call: a crash leaves either the old or the new state.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiary.core.events import Event, StoredEvent
from apiary.core.messages import JsonObject


@dataclass
class Conversation:
    """What a loop needs to restore itself (SPEC B 3.9)."""

    meta: JsonObject | None = None
    messages: list[JsonObject] = field(default_factory=list)
    cursor: JsonObject | None = None
    partials: dict[int, JsonObject] = field(default_factory=dict)


COUNT_PAGE = 1000   # events decoded at a time by the default ``count_collapsed``


class EventLog(ABC):
    @abstractmethod
    async def append(self, session_id: str, event: Event) -> StoredEvent: ...

    @abstractmethod
    async def append_many(self, session_id: str, events: list[Event]) -> list[StoredEvent]: ...

    def submit(self, session_id: str, events: list[Event]) -> asyncio.Future[list[StoredEvent]]:
        """Start appending ``events`` without waiting: the future gets them stored. Appends submitted
        for one session get ids in submission order, and their futures complete in that order.

        This default chains ``append_many`` calls per session (one task each); a backend that
        queues its writes itself (SQLite's writer) overrides it."""
        chains: dict[str, asyncio.Future[Any]] = self.__dict__.setdefault("_submit_chains", {})
        previous = chains.get(session_id)

        async def append_after() -> list[StoredEvent]:
            if previous is not None:
                await asyncio.wait([previous])   # its outcome is its own caller's to see
            return await self.append_many(session_id, events)

        task = asyncio.get_running_loop().create_task(append_after(), name=f"event-append:{session_id}")
        chains[session_id] = task

        def forget(done: asyncio.Future[Any]) -> None:
            if chains.get(session_id) is done:
                del chains[session_id]

        task.add_done_callback(forget)
        return task

    @abstractmethod
    async def read(self, session_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        """Events with id > after, oldest first, at most ``limit``."""

    @abstractmethod
    async def read_tail(self, session_id: str, limit: int) -> list[StoredEvent]:
        """The newest ``limit`` events, oldest first."""

    @abstractmethod
    async def last_id(self, session_id: str) -> int: ...

    def orders_before(self, store: object) -> bool:
        """True when whatever is submitted here is committed no later than a write submitted to
        ``store`` afterwards (one write queue for both). Then a caller may post events and go on to
        its next write without waiting for them."""
        return False

    async def count_collapsed(self, session_id: str, *, upto: int | None = None) -> int:
        """How many events with id <= ``upto`` (None: all) the log holds once text deltas are
        collapsed: ``len(collapse_text_deltas(...))`` of them. This default decodes the log a page at
        a time; the database backends count in SQL without decoding a row."""
        from apiary.core.events import TEXT_DELTA_TYPES, delta_key

        others, after = 0, 0
        keys: set[tuple[Any, ...]] = set()
        while True:
            page = await self.read(session_id, after=after, limit=COUNT_PAGE)
            for stored in page:
                if upto is not None and stored.id > upto:
                    return others + len(keys)
                if stored.type in TEXT_DELTA_TYPES:
                    keys.add(delta_key(stored))
                else:
                    others += 1
            if len(page) < COUNT_PAGE:
                return others + len(keys)
            after = page[-1].id

    @abstractmethod
    async def delete_session(self, session_id: str) -> None: ...

    @abstractmethod
    async def copy_session(self, source: str, target: str) -> None:
        """Give ``target`` a copy of ``source``'s log (same ids)."""


class ConversationStore(ABC):
    """Conversations keyed by an owner string such as ``queen:<session_id>``."""

    @abstractmethod
    async def load(self, owner: str) -> Conversation: ...

    @abstractmethod
    async def append_message(self, owner: str, message: JsonObject) -> None: ...

    @abstractmethod
    async def put_cursor(self, owner: str, cursor: JsonObject) -> None: ...

    @abstractmethod
    async def put_meta(self, owner: str, meta: JsonObject) -> None: ...

    @abstractmethod
    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        """Save (or, with None, clear) the partial assistant text being streamed at ``seq``."""

    @abstractmethod
    async def truncate_from(self, owner: str, seq: int) -> None:
        """Drop messages and partials with seq >= ``seq`` (resume from a checkpoint)."""

    @abstractmethod
    async def replace(self, owner: str, messages: list[JsonObject], cursor: JsonObject) -> None:
        """Replace every message and partial, and the cursor, in one step (compaction)."""

    @abstractmethod
    async def copy(self, source: str, target: str) -> None: ...

    @abstractmethod
    async def delete(self, owner: str) -> None: ...


class RecordingStore(ABC):
    """Model responses and tool results per (owner, run, step), for resume and recorded replay."""

    @abstractmethod
    async def put(self, owner: str, run_id: str, step: int, key: str, value: Any) -> None: ...

    @abstractmethod
    async def get_run(self, owner: str, run_id: str) -> dict[tuple[int, str], Any]: ...

    @abstractmethod
    async def delete(self, owner: str) -> None: ...


class TaskQueue(ABC):
    """One colony's task queue (SPEC B 7): progress.db with SQLite, shared tables with PostgreSQL."""

    @abstractmethod
    async def enqueue(self, tasks: list[dict[str, Any]], source: str = "enqueue_tool") -> list[str]: ...

    @abstractmethod
    async def claim(self, worker_id: str, task_id: str | None = None) -> Any:
        """A ``ClaimedTask`` (id, goal, payload, worker_id, claim_token, ...) or None."""

    @abstractmethod
    async def heartbeat(self, task_id: str, worker_id: str) -> bool: ...

    @abstractmethod
    async def start(self, task_id: str, worker_id: str) -> bool: ...

    @abstractmethod
    async def complete(self, task_id: str, worker_id: str) -> bool: ...

    @abstractmethod
    async def fail(self, task_id: str, worker_id: str, error: str) -> bool: ...

    @abstractmethod
    async def release(self, task_id: str, worker_id: str) -> bool: ...

    @abstractmethod
    async def reclaim_stale(self, stale_claim_s: float) -> int: ...

    @abstractmethod
    async def counts(self) -> dict[str, int]: ...

    @abstractmethod
    async def snapshot(self, limit: int = 500) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def progress(self, limit: int = 500) -> dict[str, Any]: ...

    @abstractmethod
    async def get(self, task_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def events(self, task_id: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def remove(self, task_ids: list[str]) -> None:
        """Delete these tasks (undo of a failed spawn's seeding)."""

    @abstractmethod
    async def close(self) -> None: ...


class WorkerSessionStore(ABC):
    """One worker session's state, run log and checkpoints (SPEC B 3.9, 6.4)."""

    id: str

    @abstractmethod
    async def exists(self) -> bool: ...

    @abstractmethod
    async def read_state(self) -> dict[str, Any] | None:
        """The stored state; raises ``ValueError`` when it cannot be parsed."""

    @abstractmethod
    async def write_state(self, state: dict[str, Any]) -> None: ...

    @abstractmethod
    async def append_run(self, run_id: str, event: str, now: float, error: str | None = None) -> None: ...

    @abstractmethod
    async def new_checkpoint_id(self, kind: str, node: str, now: float) -> str: ...

    @abstractmethod
    async def write_checkpoint(self, checkpoint: dict[str, Any], *, force_index: bool = False) -> None: ...

    @abstractmethod
    async def list_checkpoints(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None: ...

    async def latest_checkpoint(self) -> dict[str, Any] | None:
        listed = await self.list_checkpoints()
        return listed[-1] if listed else None

    @abstractmethod
    async def write_index(self) -> None: ...

    async def save(self, checkpoint: dict[str, Any], state: dict[str, Any], *, force_index: bool = False) -> None:
        """A checkpoint and the state that names it, as one write where the backend can."""
        await self.write_checkpoint(checkpoint, force_index=force_index)
        await self.write_state(state)

    async def end(self, state: dict[str, Any], run_id: str, event: str, now: float, error: str | None = None) -> None:
        """The final state, the index and the run log line of an ended execution."""
        await self.write_state(state)
        await self.write_index()
        await self.append_run(run_id, event, now, error)


@dataclass
class ClaimedExecution:
    colony: str
    id: str
    session_id: str
    entry_point: str
    request: dict[str, Any]
    attempts: int
    cancel_reason: str | None = None


class Coordination(ABC):
    """What processes sharing one database use to split the work (PostgreSQL only).

    Executions are rows claimed by worker processes under a lease; the mailbox carries messages
    to a queen (``queen:<session id>``) or to one execution (``exec:<colony>/<id>``), and a
    notification on ``CHANNEL`` with the target (or ``work`` for new executions) wakes whoever
    waits. The registry keeps each colony's spec files so any host can run its workers.
    """

    CHANNEL = "apiary_control"
    WORK = "work"

    @staticmethod
    def queen_target(session_id: str) -> str:
        return f"queen:{session_id}"

    @staticmethod
    def exec_target(colony: str, execution_id: str) -> str:
        return f"exec:{colony}/{execution_id}"

    @abstractmethod
    async def submit(self, colony: str, execution_id: str, session_id: str, entry_point: str,
                     request: dict[str, Any]) -> bool:
        """Queue an execution; False when it, or another on its entry point, is still active."""

    @abstractmethod
    async def claim_executions(self, worker: str, limit: int, lease_s: float) -> list[ClaimedExecution]:
        """Pending executions and those whose lease expired, now held by ``worker``."""

    @abstractmethod
    async def renew(self, colony: str, execution_id: str, worker: str, lease_s: float) -> bool:
        """Extend the lease; False when ``worker`` no longer holds it."""

    @abstractmethod
    async def finish(self, colony: str, execution_id: str, worker: str, outcome: str) -> bool: ...

    @abstractmethod
    async def release(self, colony: str, execution_id: str, worker: str) -> bool:
        """Give the execution back (graceful shutdown): another worker resumes it."""

    @abstractmethod
    async def request_cancel(self, colony: str, execution_id: str, reason: str) -> str:
        """``running`` (the holder is told), ``ended`` (it had not started: ended here) or ``not_found``."""

    @abstractmethod
    async def cancel_reason(self, colony: str, execution_id: str) -> str | None: ...

    @abstractmethod
    async def active_executions(self, colony: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def post(self, target: str, body: dict[str, Any]) -> None: ...

    @abstractmethod
    async def take(self, target: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def register_colony(self, name: str, session_id: str, files: dict[str, str]) -> None: ...

    @abstractmethod
    async def colony_files(self, name: str) -> dict[str, str] | None: ...

    @abstractmethod
    async def wake(self, target: str) -> None: ...

    @abstractmethod
    async def lease_session(self, session_id: str, owner: str, lease_s: float, *, take_from: str | None = None) -> str:
        """Take or renew the lease of a session for ``owner`` (also from ``take_from``, a holder known to be
        dead); returns its holder afterwards."""

    @abstractmethod
    async def renew_sessions(self, owner: str, lease_s: float) -> None: ...

    @abstractmethod
    async def release_session(self, session_id: str | None, owner: str) -> None:
        """Give up one session's lease (or, with None, every lease of ``owner``)."""


class Stores(ABC):
    events: EventLog
    conversations: ConversationStore
    recordings: RecordingStore
    shared: bool = False   # other processes write to the same database (events need ordered fan-out)
    coordination: Coordination | None = None   # set when executions run on worker processes

    def task_queue(self, colony: str, colony_dir: Path, *, lease_s: float) -> TaskQueue:
        """The colony's queue; by default its ``data/progress.db``."""
        from apiary.storage.sqlite.tasks import SqliteTaskQueue

        return SqliteTaskQueue(colony_dir / "data" / "progress.db")

    def worker_session(self, colony: str, path: Path, worker_session_id: str) -> WorkerSessionStore:
        """One worker session; by default its folder ``path`` under the colony."""
        from apiary.storage.worker_session_files import FileWorkerSession

        return FileWorkerSession(path)

    async def worker_session_ids(self, colony: str, root: Path) -> list[str]:
        from apiary.storage.worker_session_files import file_worker_session_ids

        return await asyncio.to_thread(file_worker_session_ids, root)

    def add_notification_callback(self, callback: Callable[[str, str | None], None]) -> None:
        """Called on notifications from other processes; local backends have none."""
        return None

    def remove_notification_callback(self, callback: Callable[[str, str | None], None]) -> None:
        return None

    @abstractmethod
    async def ping(self) -> None:
        """Raise when storage cannot be reached."""

    @abstractmethod
    async def aclose(self) -> None: ...
