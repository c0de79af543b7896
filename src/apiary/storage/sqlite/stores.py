"""The SQLite ``Stores``: apiary.db under APIARY_HOME, one connection shared by the stores."""

from __future__ import annotations

from pathlib import Path

from apiary.storage.base import Stores
from apiary.storage.sqlite.conversations import SqliteConversationStore, SqliteRecordingStore
from apiary.storage.sqlite.database import Database
from apiary.storage.sqlite.events import SqliteEventLog


class SqliteStores(Stores):
    def __init__(self, db: Database) -> None:
        self.db = db
        self.events = SqliteEventLog(db)
        self.conversations = SqliteConversationStore(db)
        self.recordings = SqliteRecordingStore(db)

    @classmethod
    async def open(cls, path: Path) -> SqliteStores:
        return cls(await Database.open(path))

    async def ping(self) -> None:
        await self.db.fetchone("SELECT 1")

    async def aclose(self) -> None:
        await self.db.close()
