"""The pieces of one MCP connection: its state, the watched read stream, the stderr file, reasons.

Used by ``mcp_servers.McpToolSource``; no policy here.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import IO, Any

import anyio
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED

STDERR_TAIL_CHARS = 800
STDERR_KEEP_BYTES = 1 << 20   # a chatty server's log is cut back to nothing beyond this
END_OF_STREAM = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)


class Connection:
    """One run of the server: its owner task, the SDK client once ready, and whether it ended."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "not retrieved"
        self.stop = anyio.Event()
        self.client: Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.stderr: StderrLog | None = None     # stdio servers only
        self.scope: anyio.CancelScope | None = None
        self.ended = False          # the server's stream ended or the owner task finished
        self.stopping = False

    @property
    def alive(self) -> bool:
        return (self.client is not None and not self.ended and not self.stopping
                and self.task is not None and not self.task.done())


class WatchedRead:
    """The transport's read stream, reporting its end (the server exited or hung up)."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner, self._on_end = inner, on_end

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except END_OF_STREAM:
            self._on_end()
            raise

    def __aiter__(self) -> WatchedRead:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> WatchedRead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:   # e.g. ``last_context``, read by the SDK's dispatcher
        return getattr(self._inner, name)


@asynccontextmanager
async def watched(transport: AbstractAsyncContextManager[Any], on_end: Callable[[], None]) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield WatchedRead(read_stream, on_end), write_stream


class StderrLog:
    """An unlinked temporary file a stdio server appends its stderr to; we read the tail since the last answer."""

    def __init__(self, name: str) -> None:
        fd, path = tempfile.mkstemp(prefix=f"apiary-mcp-{name}-", suffix=".log")
        os.close(fd)
        try:
            self.writer: IO[bytes] = open(path, "ab")  # noqa: SIM115 - O_APPEND: our reads never move its writes
            self._reader: IO[bytes] = open(path, "rb")  # noqa: SIM115
        finally:
            os.unlink(path)
        self._mark = 0

    def _size(self) -> int:
        try:
            return os.fstat(self._reader.fileno()).st_size
        except (OSError, ValueError):
            return 0

    def mark(self) -> None:
        """The server answered: what it wrote so far is not the reason for a later failure."""
        size = self._size()
        if size > STDERR_KEEP_BYTES and not self.writer.closed:
            os.ftruncate(self.writer.fileno(), 0)   # appends continue at the new end
            size = 0
        self._mark = size

    def tail(self) -> str:
        """The last lines written since the mark, whitespace collapsed, ``" | "`` between lines."""
        if self._reader.closed:
            return ""
        try:
            self._reader.seek(max(self._mark, self._size() - 4 * STDERR_TAIL_CHARS))
            text = self._reader.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = (" ".join(line.split()) for line in text.splitlines())
        return " | ".join(line for line in lines if line)[-STDERR_TAIL_CHARS:]

    def close(self) -> None:
        self.writer.close()
        self._reader.close()


class StartProblem(Exception):
    """A reason found before starting (its text is the whole reason)."""


def reason(exc: BaseException) -> str:
    """A one-line reason, looking inside exception groups."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return reason(exc.exceptions[0])
    if isinstance(exc, StartProblem):
        return str(exc)
    if isinstance(exc, MCPError):
        if exc.code == CONNECTION_CLOSED:
            return "it exited or hung up before the MCP handshake was complete"
        return exc.error.message
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"command not found: {exc.filename}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
