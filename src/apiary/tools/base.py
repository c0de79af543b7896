"""The tool protocol: a spec plus an async call.

A tool raises ``core.errors.ToolRetry`` (or returns ``ToolOutput(is_error=True)``) to hand the
model an error it can correct. ``is_idempotent`` says whether a call whose outcome is unknown
after a crash may be run again; ``is_concurrency_safe`` whether it may run beside other calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from apiary.core.messages import ToolSpec


@dataclass(frozen=True, slots=True)
class ToolOutput:
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolContext:
    workspace: Path                       # the folder this agent's file tools are confined to
    session_id: str = ""
    node_id: str = ""
    spillover_dir: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Tool(Protocol):
    spec: ToolSpec
    is_idempotent: bool
    is_concurrency_safe: bool

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput: ...


class Toolset:
    """An ordered, name-keyed set of tools."""

    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools or []:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        self._tools[tool.spec.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def only(self, names: list[str] | None) -> Toolset:
        """The tools whose names are listed (None keeps all)."""
        if names is None:
            return Toolset(list(self._tools.values()))
        return Toolset([t for n, t in self._tools.items() if n in names])

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)
