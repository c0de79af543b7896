"""SQLite backend: apiary.db (events, conversations, recordings) and the colonies' progress.db."""
