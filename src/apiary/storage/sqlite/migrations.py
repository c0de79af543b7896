"""Append-only schema migrations of apiary.db. Position is version; never edit a shipped entry.

tests/storage/test_migrations.py pins the hash of each entry so a change to one fails.
"""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[tuple[str, str], ...]] = (
    (
        "m001_events",
        """
        CREATE TABLE events (
            session_id TEXT NOT NULL,
            id INTEGER NOT NULL,
            type TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (session_id, id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "m002_conversations",
        """
        CREATE TABLE conv_messages (
            owner TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (owner, seq)
        ) WITHOUT ROWID;
        CREATE TABLE conv_partials (
            owner TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (owner, seq)
        ) WITHOUT ROWID;
        CREATE TABLE conv_state (
            owner TEXT PRIMARY KEY,
            meta TEXT,
            cursor TEXT
        );
        """,
    ),
    (
        "m003_recordings",
        """
        CREATE TABLE recordings (
            owner TEXT NOT NULL,
            run_id TEXT NOT NULL,
            step INTEGER NOT NULL,
            key TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (owner, run_id, step, key)
        ) WITHOUT ROWID;
        """,
    ),
)
