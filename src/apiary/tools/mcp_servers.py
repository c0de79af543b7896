"""McpToolSource: one MCP server, reached through the official ``mcp`` SDK (2.x), as a source of tools.

Lifecycle:

* **lazy**: nothing starts until the first ``list_tools`` or ``call_tool``.
* **one owner task** per connection enters the transport and the SDK ``Client`` on one
  ``AsyncExitStack`` and exits them in the same task, so anyio's cancel scopes stay in one task;
  calls are made from the callers' tasks over the shared session (JSON-RPC multiplexes them).
* **timeouts everywhere**: the handshake has ``start_timeout_s`` (the owner's whole scope is
  cancelled when it runs out), each call ``call_timeout_s``; a caller never waits longer.
* **restart on crash**: the read stream is watched, so a server that exited is known to be dead;
  the next call starts it again (once per call). Repeated failures back off: the first retry is
  immediate, then 1, 2, 4 ... up to 300 s, during which calls fail at once with the last reason.
  A connection lost *during* a call is retried once only for idempotent tools; otherwise the
  model is told the outcome is unknown.
* **errors are results**: a server that cannot start, a timeout, a protocol error all come back
  as ``ToolOutput(is_error=True)`` naming the server and the reason (with the tail of a stdio
  server's stderr); each failure is also logged.
* ``aclose()`` ends the connection (the SDK closes stdin, then terminates the process group).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, Implementation
from mcp.types import Tool as McpToolInfo
from pydantic import ValidationError

from apiary.core.tasks import TaskOwner
from apiary.tools.base import ToolOutput
from apiary.tools.mcp_config import McpServerConfig
from apiary.tools.mcp_connection import (
    END_OF_STREAM,
    Connection,
    StartProblem,
    StderrLog,
    reason,
    watched,
)
from apiary.tools.mcp_results import flatten_result

log = logging.getLogger(__name__)

CLIENT_INFO = Implementation(name="apiary", version="0.1.0")
MAX_BACKOFF_S = 300.0
STOP_TIMEOUT_S = 10.0      # the SDK's stdio shutdown needs up to ~6.5 s for a server that ignores SIGTERM
MAX_LIST_PAGES = 100


class McpServerError(Exception):
    """The server could not be started or reached; the message names it and says why."""


class ConnectionLost(Exception):
    pass


class McpToolSource:
    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self._tasks = TaskOwner(f"mcp:{config.name}")
        self._owners: set[asyncio.Task[None]] = set()   # owner tasks not finished yet
        self._lock = asyncio.Lock()
        self._conn: Connection | None = None
        self._tools: list[McpToolInfo] | None = None
        self._failures = 0
        self._failed_at = 0.0
        self._closed = False
        self.last_error: str | None = None
        self.starts = 0              # how many times the server was started (tests, diagnostics)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> bool:
        return self._conn is not None and self._conn.alive

    # -- tools -------------------------------------------------------------------------------------

    async def list_tools(self, *, refresh: bool = False) -> list[McpToolInfo]:
        """The server's tools (starting it when needed); kept across restarts. Raises ``McpServerError``."""
        if self._tools is not None and not refresh:
            return self._tools
        conn = await self._connect()
        tools: list[McpToolInfo] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.config.call_timeout_s):
                for _ in range(MAX_LIST_PAGES):
                    page = await _client(conn).list_tools(cursor=cursor)
                    tools += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except TimeoutError:
            raise self._error(f"did not list its tools within {self.config.call_timeout_s:g}s") from None
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                raise self._error(f"closed the connection while listing tools{self._stderr_tail(conn)}") from None
            raise self._error(f"refused to list its tools: {exc.error.message}") from None
        except (ValidationError, *END_OF_STREAM, OSError, httpx2.HTTPError) as exc:
            raise self._error(f"could not list its tools: {reason(exc)}") from None
        self._tools = tools
        self._answered(conn)
        return tools

    async def call_tool(self, tool: str, arguments: Mapping[str, Any], *, idempotent: bool = False) -> ToolOutput:
        """Call ``tool``; every failure is an error result, never an exception (cancellation propagates)."""
        restarted = False
        for attempt in (1, 2):
            try:
                conn, started = await self._connect_counting()
                restarted = restarted or started
                result = await self._call(conn, tool, dict(arguments))
                self._answered(conn)
            except McpServerError as exc:
                return ToolOutput(str(exc), is_error=True)
            except ConnectionLost as exc:
                if attempt == 1 and idempotent and not restarted:
                    log.info("MCP server %s: connection lost during %s; retrying the idempotent call", self.name, tool)
                    continue
                return ToolOutput(f"MCP server '{self.name}' {exc} during the call to '{tool}'; its outcome is "
                                  "unknown. The server will be restarted at the next call.", is_error=True)
            return flatten_result(result)
        raise AssertionError("unreachable")

    async def _call(self, conn: Connection, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        timeout = self.config.call_timeout_s
        try:
            # The SDK's own timeout (it then tells the server to stop); ours covers a write that blocks.
            async with asyncio.timeout(timeout + 2.0):
                return await _client(conn).call_tool(tool, arguments, read_timeout_seconds=timeout)
        except TimeoutError:
            self._retire(conn, f"stopped answering (a call to '{tool}' blocked for {timeout + 2.0:g}s)")
            raise self._error(f"timed out after {timeout:g}s calling '{tool}'") from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise self._error(f"timed out after {timeout:g}s calling '{tool}'") from None
            if exc.code == CONNECTION_CLOSED:
                self._mark_ended(conn)
                raise ConnectionLost(f"closed the connection{self._stderr_tail(conn)}") from None
            raise self._error(f"refused the call to '{tool}': {exc.error.message}") from None
        except ValidationError:
            raise self._error(f"sent a malformed result for '{tool}'") from None
        except (*END_OF_STREAM, OSError, httpx2.HTTPError) as exc:
            self._retire(conn, f"connection failed: {reason(exc)}")
            raise ConnectionLost(f"could not be reached ({reason(exc)})") from None
        except Exception as exc:  # an SDK surprise is still only this call's failure
            log.exception("MCP server %s: call to %s failed", self.name, tool)
            raise self._error(f"failed calling '{tool}': {reason(exc)}") from None

    # -- the connection ----------------------------------------------------------------------------

    async def _connect(self) -> Connection:
        return (await self._connect_counting())[0]

    async def _connect_counting(self) -> tuple[Connection, bool]:
        """A live connection, and whether this call started it. Raises ``McpServerError``."""
        started = False
        async with self._lock:
            if self._closed:
                raise self._error("is closed")
            conn = self._conn
            if conn is None or (conn.ready.done() and not conn.alive):
                if conn is not None:
                    self._retire(conn, None)
                wait = self._backoff_left()
                if wait > 0:
                    raise McpServerError(f"{self.last_error} (not retried for another {wait:.1f}s)")
                conn = self._conn = self._spawn()
                started = True
        try:
            await asyncio.shield(conn.ready)  # a cancelled caller leaves the start running for the next one
        except McpServerError:
            async with self._lock:
                if self._conn is conn:
                    self._conn = None
            raise
        return conn, started

    def _spawn(self) -> Connection:
        conn = Connection()
        self.starts += 1
        conn.task = self._tasks.spawn(self._own(conn), name=f"mcp:{self.name}")
        self._owners.add(conn.task)
        conn.task.add_done_callback(self._owners.discard)
        return conn

    async def _own(self, conn: Connection) -> None:
        """The owner task: enter, wait for the stop signal, exit, all in this task."""
        with anyio.CancelScope() as scope:
            conn.scope = scope
            expiry = asyncio.get_running_loop().call_later(self.config.start_timeout_s, self._start_expired,
                                                           conn, scope)
            try:
                async with AsyncExitStack() as stack:
                    conn.client = await stack.enter_async_context(self._client_for(conn, stack))
                    expiry.cancel()
                    conn.ready.set_result(None)
                    log.info("MCP server %s started (%s)", self.name, self.config.transport)
                    await conn.stop.wait()
            except Exception as exc:
                was_ready = conn.ready.done()
                self._fail_start(conn, reason(exc) + self._stderr_tail(conn))
                if was_ready and not conn.stopping and not conn.ended:
                    log.warning("MCP server %s: connection failed: %s", self.name, reason(exc))
            finally:
                expiry.cancel()
                conn.ended = True
                if conn.stderr is not None:
                    conn.stderr.close()

    def _client_for(self, conn: Connection, stack: AsyncExitStack) -> Client:
        cfg = self.config
        if cfg.transport == "stdio":
            if cfg.cwd is not None and not cfg.cwd.is_dir():
                raise StartProblem(f"its working directory {cfg.cwd} does not exist")
            conn.stderr = StderrLog(cfg.name)
            errlog = conn.stderr.writer
            params = StdioServerParameters(command=cfg.command, args=list(cfg.args), env=cfg.env or None, cwd=cfg.cwd)
            transport: AbstractAsyncContextManager[Any] = stdio_client(params, errlog=errlog)  # type: ignore[arg-type]
        else:
            http = httpx2.AsyncClient(headers=cfg.headers, timeout=httpx2.Timeout(30.0, read=300.0))
            stack.push_async_callback(http.aclose)
            transport = streamable_http_client(cfg.url, http_client=http)
        return Client(watched(transport, lambda: self._mark_ended(conn)), client_info=CLIENT_INFO,
                      read_timeout_seconds=cfg.start_timeout_s)

    def _start_expired(self, conn: Connection, scope: anyio.CancelScope) -> None:
        if not conn.ready.done():
            self._fail_start(conn, f"no MCP handshake within {self.config.start_timeout_s:g}s"
                                   + self._stderr_tail(conn))
            scope.cancel()

    def _fail_start(self, conn: Connection, why: str) -> None:
        if conn.ready.done():
            return
        message = f"MCP server '{self.name}' failed to start: {why}"
        log.warning("%s", message)
        self._record_failure(message)
        conn.ready.set_exception(McpServerError(message))

    def _mark_ended(self, conn: Connection) -> None:
        if conn.ended:
            return
        conn.ended = True
        if conn.ready.done() and not conn.stopping and not self._closed:
            message = f"MCP server '{self.name}' exited or closed the connection{self._stderr_tail(conn)}"
            log.warning("%s; it will be restarted at the next call", message)
            self._record_failure(message)

    def _retire(self, conn: Connection, why: str | None) -> None:
        """Stop a connection in the background (it ended, or it is stuck)."""
        if why is not None and not conn.stopping:
            message = f"MCP server '{self.name}' {why}"
            log.warning("%s; restarting it at the next call", message)
            self._record_failure(message)
        conn.stopping = True
        conn.stop.set()
        if self._conn is conn:
            self._conn = None

    def _answered(self, conn: Connection) -> None:
        self._failures = 0
        if conn.stderr is not None:
            conn.stderr.mark()

    def _record_failure(self, message: str) -> None:
        self._failures += 1
        self._failed_at = time.monotonic()
        self.last_error = message

    def _backoff_left(self) -> float:
        if self._failures <= 1:
            return 0.0
        delay = min(2.0 ** (self._failures - 2), MAX_BACKOFF_S)
        return max(0.0, self._failed_at + delay - time.monotonic())

    def _error(self, why: str) -> McpServerError:
        return McpServerError(f"MCP server '{self.name}' {why}")

    def _stderr_tail(self, conn: Connection) -> str:
        tail = conn.stderr.tail() if conn.stderr is not None else ""
        return f"; its stderr ends with: {tail}" if tail else ""

    async def aclose(self) -> None:
        """Stop the server and wait (bounded) for its process to be gone."""
        async with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.stopping = True
            conn.stop.set()
            if not conn.ready.done():  # still starting: give up on it now
                self._fail_start(conn, "the owner closed it while it was starting")
                if conn.scope is not None:
                    conn.scope.cancel()
        # Let every owner task (also those of retired connections) run the SDK's shutdown to its end:
        # a native cancel inside its shielded shutdown can leave the process behind.
        if self._owners:
            _, pending = await asyncio.wait(set(self._owners), timeout=STOP_TIMEOUT_S)
            if pending:
                log.warning("MCP server %s did not stop within %gs; cancelling", self.name, STOP_TIMEOUT_S)
        await self._tasks.aclose(timeout_s=2.0)


def _client(conn: Connection) -> Client:
    if conn.client is None:  # pragma: no cover - _connect only returns ready connections
        raise McpServerError("MCP connection is not ready")
    return conn.client


