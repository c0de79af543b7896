"""The PostgreSQL ``Stores``: one pool for every store, one LISTEN connection for notifications."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from apiary.storage.base import Coordination, Stores, TaskQueue, WorkerSessionStore
from apiary.storage.postgres.conversations import PgConversationStore, PgRecordingStore
from apiary.storage.postgres.coordination import PgCoordination
from apiary.storage.postgres.database import PgDatabase
from apiary.storage.postgres.events import CHANNEL as EVENTS_CHANNEL
from apiary.storage.postgres.events import PgEventLog
from apiary.storage.postgres.notify import PgNotifier
from apiary.storage.postgres.tasks import CHANNEL as TASKS_CHANNEL
from apiary.storage.postgres.tasks import PgTaskQueue
from apiary.storage.postgres.worker_sessions import PgWorkerSession, list_worker_sessions

CONTROL_CHANNEL = Coordination.CHANNEL


class PgStores(Stores):
    shared = True

    def __init__(self, db: PgDatabase, notifier: PgNotifier) -> None:
        self.db = db
        self.notifier = notifier
        self.events = PgEventLog(db)
        self.conversations = PgConversationStore(db)
        self.recordings = PgRecordingStore(db)
        self.coordination = PgCoordination(db)

    @classmethod
    async def open(cls, url: str, *, listen_url: str | None = None) -> PgStores:
        """``listen_url``: where the LISTEN connection goes (a pooler in transaction mode cannot carry it)."""
        db = await PgDatabase.open(url)
        notifier = PgNotifier(listen_url or url, (EVENTS_CHANNEL, TASKS_CHANNEL, CONTROL_CHANNEL))
        notifier.start()
        return cls(db, notifier)

    def task_queue(self, colony: str, colony_dir: Path, *, lease_s: float) -> TaskQueue:
        return PgTaskQueue(self.db, colony, lease_s=lease_s)

    def worker_session(self, colony: str, path: Path, worker_session_id: str) -> WorkerSessionStore:
        return PgWorkerSession(self.db, colony, worker_session_id)

    async def worker_session_ids(self, colony: str, root: Path) -> list[str]:
        return await list_worker_sessions(self.db, colony)

    def add_notification_callback(self, callback: Callable[[str, str | None], None]) -> None:
        self.notifier.add_callback(callback)

    def remove_notification_callback(self, callback: Callable[[str, str | None], None]) -> None:
        self.notifier.remove_callback(callback)

    async def notify(self, channel: str, payload: str) -> None:
        await self.db.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async def ping(self) -> None:
        await self.db.fetchone("SELECT 1")

    async def aclose(self) -> None:
        await self.notifier.aclose()
        await self.db.close()
