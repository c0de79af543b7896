"""PostgreSQL backend: every store in one database, LISTEN/NOTIFY for wake-ups across hosts."""
