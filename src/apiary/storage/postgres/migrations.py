"""Append-only schema migrations of the PostgreSQL backend. Position is version; never edit a shipped
entry (tests/storage/test_migrations.py pins their hashes)."""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[tuple[str, str], ...]] = (
    (
        "m001_events",
        """
        CREATE TABLE apiary_events (
            session_id TEXT NOT NULL, id BIGINT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (session_id, id));
        CREATE TABLE apiary_event_heads (session_id TEXT PRIMARY KEY, last_id BIGINT NOT NULL);
        """,
    ),
    (
        "m002_conversations",
        """
        CREATE TABLE apiary_conv_messages (owner TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (owner, seq));
        CREATE TABLE apiary_conv_partials (owner TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (owner, seq));
        CREATE TABLE apiary_conv_state (owner TEXT PRIMARY KEY, meta TEXT, cursor TEXT);
        """,
    ),
    (
        "m003_recordings",
        """
        CREATE TABLE apiary_recordings (owner TEXT NOT NULL, run_id TEXT NOT NULL, step INTEGER NOT NULL,
            key TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (owner, run_id, step, key));
        """,
    ),
    (
        "m004_tasks",
        """
        CREATE TABLE apiary_tasks (
            colony TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER, priority INTEGER NOT NULL DEFAULT 0,
            goal TEXT NOT NULL, payload TEXT, status TEXT NOT NULL DEFAULT 'pending', worker_id TEXT,
            claim_token TEXT, claimed_at TIMESTAMPTZ, started_at TIMESTAMPTZ, completed_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            retry_count INTEGER NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL DEFAULT 3, last_error TEXT,
            parent_task_id TEXT, source TEXT, lease_until TIMESTAMPTZ, steps TEXT, sop_items TEXT,
            PRIMARY KEY (colony, id));
        CREATE INDEX apiary_tasks_claimable ON apiary_tasks (colony, priority DESC, seq, created_at)
            WHERE status = 'pending';
        CREATE INDEX apiary_tasks_leases ON apiary_tasks (lease_until) WHERE status IN ('claimed', 'in_progress');
        CREATE TABLE apiary_task_events (
            id BIGSERIAL PRIMARY KEY, colony TEXT NOT NULL, task_id TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT now(), worker_id TEXT, kind TEXT NOT NULL, from_status TEXT,
            to_status TEXT, detail TEXT);
        """,
    ),
    (
        "m005_worker_sessions",
        """
        CREATE TABLE apiary_worker_sessions (colony TEXT NOT NULL, id TEXT NOT NULL, state TEXT,
            checkpoint_counter INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (colony, id));
        CREATE TABLE apiary_checkpoints (colony TEXT NOT NULL, session_id TEXT NOT NULL, n INTEGER NOT NULL,
            checkpoint_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (colony, session_id, checkpoint_id));
        CREATE INDEX apiary_checkpoints_order ON apiary_checkpoints (colony, session_id, n);
        CREATE TABLE apiary_worker_runs (id BIGSERIAL PRIMARY KEY, colony TEXT NOT NULL, session_id TEXT NOT NULL,
            line TEXT NOT NULL);
        """,
    ),
    (
        "m006_colonies_and_mailbox",
        """
        CREATE TABLE apiary_colonies (name TEXT PRIMARY KEY, session_id TEXT NOT NULL, spec TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
        CREATE TABLE apiary_mailbox (id BIGSERIAL PRIMARY KEY, target TEXT NOT NULL, body TEXT NOT NULL,
            taken BOOLEAN NOT NULL DEFAULT false, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
        CREATE INDEX apiary_mailbox_open ON apiary_mailbox (target) WHERE NOT taken;
        """,
    ),
    (
        "m007_executions",
        """
        CREATE TABLE apiary_executions (
            colony TEXT NOT NULL, id TEXT NOT NULL, session_id TEXT NOT NULL, entry_point TEXT NOT NULL,
            request TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', worker TEXT, lease_until TIMESTAMPTZ,
            attempts INTEGER NOT NULL DEFAULT 0, cancel_reason TEXT, outcome TEXT,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (colony, id));
        CREATE UNIQUE INDEX apiary_executions_one_per_stream ON apiary_executions (colony, entry_point)
            WHERE status IN ('pending', 'running');
        CREATE INDEX apiary_executions_claimable ON apiary_executions (created_at)
            WHERE status IN ('pending', 'running');
        """,
    ),
    (
        "m008_task_claim_order",
        """
        CREATE INDEX apiary_tasks_claim_order ON apiary_tasks
            (colony, priority DESC, seq ASC NULLS FIRST, created_at, id) WHERE status = 'pending';
        DROP INDEX apiary_tasks_claimable;
        """,
    ),
    (
        "m009_session_leases",
        """
        CREATE TABLE apiary_session_leases (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
            lease_until TIMESTAMPTZ NOT NULL);
        CREATE INDEX apiary_session_leases_owner ON apiary_session_leases (owner);
        """,
    ),
)
