"""Atomic JSON files: temporary file, fsync, rename. UTF-8, non-ASCII kept.

Callers on the event loop run the durable writes in a thread (``asyncio.to_thread``): an fsync can take
hundreds of milliseconds on a busy disk. ``merge_json`` is a read-modify-write, so merges of one file are
serialised (a lock per file name, from a fixed set) and two threads merging different keys lose neither.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any


def dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text that is valid UTF-8: non-ASCII kept, but lone surrogates (undecodable file names,
    ``"\\ud800"`` sent by a client) escaped, so no store refuses the text."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, indent=indent)
    return text


def write_json(path: Path, value: Any, *, indent: int | None = 2, durable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dumps(value, indent=indent).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_MERGE_LOCKS = tuple(threading.Lock() for _ in range(64))


def _merge_lock(path: Path) -> threading.Lock:
    return _MERGE_LOCKS[hash(os.path.abspath(path)) % len(_MERGE_LOCKS)]


def read_json(path: Path, default: Any = None) -> Any:
    """The file's JSON, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def merge_json(path: Path, updates: dict[str, Any], *, remove: tuple[str, ...] = ()) -> dict[str, Any]:
    """Merge keys into a JSON object file (never replaced wholesale) and return the result."""
    with _merge_lock(path):
        current = read_json(path, {})
        if not isinstance(current, dict):
            current = {}
        current.update(updates)
        for key in remove:
            current.pop(key, None)
        write_json(path, current)
    return current
