"""A read-only view of a colony's ``progress.db`` for the web client's data browser (SPEC C.5).

Every call opens its own connection with ``mode=ro`` (writes fail inside SQLite itself) and closes
it. Table and column names never reach SQL unchecked: a table must be one ``sqlite_master`` lists,
an ``order_by`` column one ``PRAGMA table_info`` lists, and both are quoted as identifiers.
Synchronous; callers run it off the event loop.
"""

from __future__ import annotations

import base64
import math
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from apiary.core.errors import InvalidRequest, NotFound

FIRST_TABLE = "colony_meta"


def connect_read_only(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_names(conn: sqlite3.Connection) -> list[str]:
    """User tables, ``colony_meta`` first, the others by name."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
                        "ESCAPE '\\'").fetchall()
    names = sorted(str(r[0]) for r in rows)
    return sorted(names, key=lambda n: n != FIRST_TABLE)


def columns(conn: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    rows = conn.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall()
    return [{"name": r[1], "type": r[2] or "", "notnull": bool(r[3]), "pk": int(r[5]), "dflt_value": r[4]}
            for r in rows]


def primary_key(cols: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in sorted((c for c in cols if c["pk"] > 0), key=lambda c: c["pk"])]


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {quote_ident(table)}").fetchone()[0])


def _cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")     # BLOBs travel as base64 text
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def list_tables(db: Path) -> list[dict[str, Any]]:
    conn = connect_read_only(db)
    try:
        found = []
        for name in table_names(conn):
            cols = columns(conn, name)
            found.append({"name": name, "columns": cols, "row_count": _count(conn, name),
                          "primary_key": primary_key(cols)})
        return found
    finally:
        conn.close()


def read_rows(db: Path, table: str, *, limit: int, offset: int, order_by: str | None,
              descending: bool) -> dict[str, Any]:
    """One page of ``table``: NotFound for an unknown table, InvalidRequest for an unknown ``order_by``."""
    conn = connect_read_only(db)
    try:
        if table not in table_names(conn):
            raise NotFound(f"Table '{table}' not found")
        cols = columns(conn, table)
        names = [c["name"] for c in cols]
        pk = primary_key(cols)
        if order_by is not None and order_by not in names:
            raise InvalidRequest(f"order_by: unknown column '{order_by}' in table '{table}'")
        direction = "DESC" if descending else "ASC"
        # The primary key breaks ties, so pages of a sort on a non-unique column do not overlap.
        order = pk if order_by is None else [order_by, *(c for c in pk if c != order_by)]
        order_sql = ", ".join(f"{quote_ident(c)} {direction}" for c in order) if order else f"rowid {direction}"
        select = ", ".join(quote_ident(n) for n in names)
        cursor = conn.execute(f"SELECT {select} FROM {quote_ident(table)} ORDER BY {order_sql} LIMIT ? OFFSET ?",
                              (limit, offset))
        rows = [{name: _cell(v) for name, v in zip(names, row, strict=True)} for row in cursor]
        return {"table": table, "columns": cols, "primary_key": pk, "rows": rows, "total": _count(conn, table),
                "limit": limit, "offset": offset}
    finally:
        conn.close()
