"""The workspace tools an agent (queen session or colony worker) gets, confined to ``ctx.workspace``.

Error convention (all of them): ``call`` returns ``ToolOutput(message, is_error=True)`` for anything
the model can fix or should know about (bad arguments, a path outside the workspace, text not
found, a timeout, an ``OSError``); it never raises for those. Cancellation propagates.

| tool             | arguments                                    | idempotent / concurrency-safe |
|------------------|----------------------------------------------|-------------------------------|
| read_file        | path, offset?, limit?                        | yes / yes                     |
| list_directory   | path?                                        | yes / yes                     |
| search_files     | pattern, path?, glob?                        | yes / yes                     |
| write_file       | path, content                                | no / no                       |
| edit_file        | path, old_text, new_text, replace_all?       | no / no                       |
| undo_changes     | (none)                                       | no / no                       |
| run_command      | command, timeout_seconds?                    | no / no                       |
"""

from __future__ import annotations

from apiary.tools.base import Tool
from apiary.tools.file_tools import EditFile, ListDirectory, ReadFile, WriteFile
from apiary.tools.search_tool import SearchFiles
from apiary.tools.shell import RunCommand
from apiary.tools.undo import UndoChanges

WORKSPACE_TOOL_NAMES = (
    "read_file",
    "list_directory",
    "search_files",
    "write_file",
    "edit_file",
    "undo_changes",
    "run_command",
)


def workspace_tools(*, allow_commands: bool = True) -> list[Tool]:
    """Fresh instances of the workspace tools; ``run_command`` only when ``allow_commands``."""
    tools: list[Tool] = [ReadFile(), ListDirectory(), SearchFiles(), WriteFile(), EditFile(), UndoChanges()]
    if allow_commands:
        tools.append(RunCommand())
    return tools


__all__ = [
    "WORKSPACE_TOOL_NAMES",
    "EditFile",
    "ListDirectory",
    "ReadFile",
    "RunCommand",
    "SearchFiles",
    "UndoChanges",
    "WriteFile",
    "workspace_tools",
]
