"""Shared pieces of the workspace tools: the error convention, argument readers, file helpers.

Error convention: a workspace tool's ``call`` never raises for a problem the model can fix or
report. Tool bodies raise ``ToolRetry`` (bad arguments, refused paths, missing text ...) and
``WorkspaceTool.call`` turns it, and any ``OSError``, into ``ToolOutput(message, is_error=True)``.
Only cancellation (and real bugs) propagate.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from apiary.core.errors import ToolRetry
from apiary.core.messages import JsonObject, ToolSpec
from apiary.tools.base import ToolContext, ToolOutput

log = logging.getLogger(__name__)

INTERNAL_DIR = ".apiary"  # apiary's own files inside a workspace (undo journal); never edited by tools
SNIFF_BYTES = 8192


class WorkspaceTool:
    """Base class: subclasses set ``name``, ``description``, ``parameters`` and write ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[JsonObject]
    is_idempotent: bool = False
    is_concurrency_safe: bool = False

    def __init__(self) -> None:
        self.spec = ToolSpec(self.name, self.description, self.parameters)

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        try:
            return await self.run(args, ctx)
        except ToolRetry as exc:
            return ToolOutput(str(exc) or f"{self.name} failed", is_error=True)
        except OSError as exc:
            # The model sees the reason, not a traceback (and not host paths outside its view).
            log.debug("%s failed", self.name, exc_info=True)
            return ToolOutput(f"{self.name} failed: {exc.strerror or exc}", is_error=True)

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        raise NotImplementedError


def schema(properties: JsonObject, required: list[str] | None = None) -> JsonObject:
    out: JsonObject = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def str_arg(args: Mapping[str, Any], key: str, *, default: str | None = None, allow_empty: bool = True) -> str:
    value = args.get(key, default)
    if value is None:
        raise ToolRetry(f"missing required argument '{key}'")
    if not isinstance(value, str):
        raise ToolRetry(f"argument '{key}' must be a string")
    if not allow_empty and value == "":
        raise ToolRetry(f"argument '{key}' must not be empty")
    return value


def int_arg(args: Mapping[str, Any], key: str, *, default: int, minimum: int, maximum: int) -> int:
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())  # the loop coerces to the schema; be lenient when called directly
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolRetry(f"argument '{key}' must be an integer")
    if value < minimum or value > maximum:
        raise ToolRetry(f"argument '{key}' must be between {minimum} and {maximum}")
    return value


def bool_arg(args: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ToolRetry(f"argument '{key}' must be true or false")
    return value


def workspace_root(ctx: ToolContext) -> Path:
    return Path(os.path.realpath(ctx.workspace))


def refuse_internal(root: Path, path: Path, quoted: str) -> None:
    """Mutating tools keep out of apiary's own folder, so the undo journal cannot be forged."""
    internal = root / INTERNAL_DIR
    if path == internal or path.is_relative_to(internal):
        raise ToolRetry(f"path {quoted} is inside {INTERNAL_DIR}/, which apiary manages; choose another path")


def looks_binary(sample: bytes) -> bool:
    return b"\x00" in sample


def read_existing(path: Path) -> tuple[bytes, int] | None:
    """Bytes and permission bits of a regular file, ``None`` when it does not exist."""
    # O_NONBLOCK: opening a FIFO must not block the worker thread forever.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ToolRetry(f"'{path.name}' is not a regular file")
        os.set_blocking(fd, True)
        return fh.read(), stat.S_IMODE(st.st_mode)


def make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; returns the ones created, outermost first."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
    return list(reversed(missing))


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``.

    ``os.replace`` swaps the directory entry, so a symlink planted at ``path`` is replaced, not
    followed; a reader never sees a half-written file.
    """
    # Created with 0666 so the kernel applies the umask, as for any new file (mkstemp would give 0600).
    tmp = path.parent / f".{path.name[:40]}.{secrets.token_hex(6)}.tmp"  # short: NAME_MAX is in bytes
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
