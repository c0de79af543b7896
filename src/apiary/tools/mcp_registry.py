"""McpRegistry: the MCP servers of one owner (a queen session or a colony) as apiary ``Tool`` objects.

Naming: every MCP tool is exposed as ``<server>__<tool>`` (the tool name with characters outside
``[A-Za-z0-9_-]`` replaced by ``_``; names longer than 64 characters, the providers' limit, are cut
and end in a short hash). Always prefixed, never the bare name: the name stays the same when another
server adds a tool of the same name, it cannot shadow a built-in or phase tool (``read_file``,
``run_command`` ...), and it is what ``enabled_mcp_tools`` lists, so an allowlist means one thing.

Annotations: ``is_idempotent`` when the server marks the tool ``idempotentHint`` or
``readOnlyHint``; ``is_concurrency_safe`` only for ``readOnlyHint``; neither without annotations.

The ``mcp`` SDK is imported only when an owner has servers configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apiary.core.jsonfile import read_json
from apiary.core.messages import JsonObject, ToolSpec
from apiary.tools.base import Tool, ToolContext, ToolOutput, Toolset
from apiary.tools.mcp_config import (
    McpConfigError,
    McpServerConfig,
    colony_config_path,
    load_mcp_config,
    queen_config_path,
)

if TYPE_CHECKING:
    from mcp.types import Tool as McpToolInfo

    from apiary.tools.mcp_servers import McpToolSource

log = logging.getLogger(__name__)

SEPARATOR = "__"
MAX_NAME = 64
EMPTY_SCHEMA: JsonObject = {"type": "object", "properties": {}}


def exposed_name(server: str, tool: str) -> str:
    name = f"{server}{SEPARATOR}{re.sub(r'[^A-Za-z0-9_-]', '_', tool) or '_'}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha1(f"{server}/{tool}".encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME - 9]}_{digest}"


class McpTool:
    """One tool of one MCP server, behind apiary's ``Tool`` protocol."""

    def __init__(self, source: McpToolSource, info: McpToolInfo) -> None:
        self.source = source
        self.server = source.name
        self.mcp_name = info.name
        schema = info.input_schema if isinstance(info.input_schema, dict) else {}
        if schema.get("type") != "object":
            schema = EMPTY_SCHEMA
        description = info.description or f"Tool '{info.name}' of the MCP server '{source.name}'."
        self.spec = ToolSpec(exposed_name(source.name, info.name), description, dict(schema))
        hints = info.annotations
        read_only = bool(hints is not None and hints.read_only_hint)
        self.is_idempotent = read_only or bool(hints is not None and hints.idempotent_hint)
        self.is_concurrency_safe = read_only

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        return await self.source.call_tool(self.mcp_name, args, idempotent=self.is_idempotent)


class McpRegistry:
    """The configured servers of one owner. Nothing starts before ``load()`` / ``tools()`` / a call."""

    def __init__(self, servers: list[McpServerConfig], *, enabled_mcp_tools: list[str] | None = None,
                 config_error: str | None = None) -> None:
        self.servers = servers
        self.enabled_mcp_tools = enabled_mcp_tools   # None: all; []: none. May be changed at any time.
        self.config_error = config_error
        self._sources: dict[str, McpToolSource] = {}
        self._tools: dict[str, list[McpTool]] = {}   # per server, once listed
        self._errors: dict[str, str] = {}            # per server, why listing failed
        self._closed = False

    @classmethod
    def from_file(cls, path: Path, *, enabled_mcp_tools: list[str] | None = None) -> McpRegistry:
        """The servers of ``mcp_servers.json`` at ``path``; a bad file gives no servers and ``config_error``."""
        try:
            servers = load_mcp_config(path)
        except McpConfigError as exc:
            log.error("MCP servers not used: %s", exc)
            return cls([], enabled_mcp_tools=enabled_mcp_tools, config_error=str(exc))
        return cls(servers, enabled_mcp_tools=enabled_mcp_tools)

    @classmethod
    def for_queen(cls, queen_dir: Path) -> McpRegistry:
        """A queen's servers (``<queen_dir>/mcp_servers.json``) and allowlist (``<queen_dir>/tools.json``)."""
        return cls.from_file(queen_config_path(queen_dir), enabled_mcp_tools=read_enabled_mcp_tools(queen_dir))

    @classmethod
    def for_colony(cls, colony_dir: Path, enabled_mcp_tools: list[str] | None) -> McpRegistry:
        """A colony's servers; pass ``ColonySpec.enabled_mcp_tools`` (from its ``tools.json``)."""
        return cls.from_file(colony_config_path(colony_dir), enabled_mcp_tools=enabled_mcp_tools)

    def __bool__(self) -> bool:
        return bool(self.servers)

    def source(self, server: str) -> McpToolSource:
        if self._closed:
            raise RuntimeError("McpRegistry is closed")
        if server not in self._sources:
            from apiary.tools.mcp_servers import McpToolSource

            config = next((s for s in self.servers if s.name == server), None)
            if config is None:
                raise KeyError(f"no MCP server named {server!r}")
            self._sources[server] = McpToolSource(config)
        return self._sources[server]

    def enabled(self, name: str) -> bool:
        return self.enabled_mcp_tools is None or name in self.enabled_mcp_tools

    async def load(self, *, refresh: bool = False) -> None:
        """List every server's tools (starting the servers), all at once; failures are kept per server."""
        pending = [s.name for s in self.servers if refresh or s.name not in self._tools]
        if pending and not self._closed:
            await asyncio.gather(*(self._load_one(name, refresh) for name in pending))

    async def _load_one(self, server: str, refresh: bool) -> None:
        from apiary.tools.mcp_servers import McpServerError

        source = self.source(server)
        try:
            infos = await source.list_tools(refresh=refresh)
        except McpServerError as exc:
            self._errors[server] = str(exc)
            log.warning("MCP server %s offers no tools: %s", server, exc)
            return
        tools: dict[str, McpTool] = {}
        for info in infos:
            tool = McpTool(source, info)
            if tool.spec.name in tools:
                log.warning("MCP server %s: tool %r is exposed as %s like another one; skipped",
                            server, info.name, tool.spec.name)
                continue
            tools[tool.spec.name] = tool
        self._tools[server] = list(tools.values())
        self._errors.pop(server, None)

    def loaded_tools(self) -> list[Tool]:
        """The allowed tools of the servers listed so far (no I/O; for sync callers)."""
        return [t for s in self.servers for t in self._tools.get(s.name, []) if self.enabled(t.spec.name)]

    async def tools(self) -> list[Tool]:
        """``load()``, then the allowed tools."""
        await self.load()
        return self.loaded_tools()

    async def describe(self) -> list[JsonObject]:
        """For ``GET /api/queen/{q}/tools``: ``[{"name", "tools": [{"name", "description", "enabled",
        "input_schema"}]}]`` per server, plus ``"error"`` for a server that could not be listed."""
        await self.load()
        out: list[JsonObject] = []
        for server in self.servers:
            entry: JsonObject = {"name": server.name, "tools": [
                {"name": t.spec.name, "description": t.spec.description, "enabled": self.enabled(t.spec.name),
                 "input_schema": t.spec.parameters} for t in self._tools.get(server.name, [])]}
            if server.name in self._errors:
                entry["error"] = self._errors[server.name]
            out.append(entry)
        return out

    async def aclose(self) -> None:
        """Stop every server that was started; safe to call twice."""
        self._closed = True
        sources, self._sources = list(self._sources.values()), {}
        if sources:
            await asyncio.gather(*(s.aclose() for s in sources))


def read_enabled_mcp_tools(folder: Path) -> list[str] | None:
    """``enabled_mcp_tools`` of ``<folder>/tools.json``: a list of names, or None (absent, null, unreadable)."""
    config = read_json(folder / "tools.json")
    enabled = config.get("enabled_mcp_tools") if isinstance(config, dict) else None
    return [str(n) for n in enabled] if isinstance(enabled, list) else None


def toolset_with(base: Toolset, extra: list[Tool]) -> Toolset:
    """``base`` plus ``extra`` (an MCP name never equals a built-in one: they all contain ``__``)."""
    tools = [t for t in (base.get(n) for n in base.names()) if t is not None]
    return Toolset([*tools, *extra])


async def describe_mcp_servers(config_path: Path, enabled_mcp_tools: list[str] | None) -> list[JsonObject]:
    """One-shot ``describe()`` for a route with no live registry: start the servers, list, stop them.

    A missing file answers [] without importing the SDK; so does a bad file (the error is logged, and
    ``McpRegistry.from_file(path).config_error`` has it for a route that wants to show it).
    """
    registry = McpRegistry.from_file(config_path, enabled_mcp_tools=enabled_mcp_tools)
    try:
        return await registry.describe()
    finally:
        await registry.aclose()
