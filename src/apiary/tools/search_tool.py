"""search_files: a pure-Python regex search over the workspace's text files.

No external binaries (ripgrep may be missing). The walk never leaves the workspace: folders reached
through symlinks are not entered and file symlinks are followed only when they point inside.
Bulky tool folders (``.git``, ``node_modules``, virtualenvs, apiary's own ``.apiary``) are skipped
below the starting folder; name one as ``path`` to search it. Results are capped, and so is the
time spent, so a huge tree gives a partial answer instead of a stuck tool.

Errors follow the convention of ``_common`` (``ToolOutput(is_error=True)``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiary.core.errors import ToolRetry
from apiary.tools._common import (
    SNIFF_BYTES,
    WorkspaceTool,
    looks_binary,
    schema,
    str_arg,
    workspace_root,
)
from apiary.tools.base import ToolContext, ToolOutput
from apiary.tools.paths import is_inside, relative_display, resolve_in_workspace, shown

MAX_MATCHES = 200
MAX_SHOWN_LINE = 300
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_PATTERN = 1000
TIME_BUDGET_S = 10.0
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".apiary", "node_modules", "__pycache__", ".venv", "venv"})


@dataclass
class _Tally:
    matches: list[str] = field(default_factory=list)
    files_matched: int = 0
    files_searched: int = 0
    skipped_binary: int = 0
    skipped_large: int = 0
    capped: bool = False
    out_of_time: bool = False


def _walk(root: Path, start: Path) -> Iterator[tuple[Path, Path]]:
    """(display path, real path) of every regular file under ``start`` that stays in the workspace."""
    if not start.is_dir():
        yield start, start
        return
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            full = Path(dirpath) / name
            try:
                mode = os.lstat(full).st_mode
            except OSError:
                continue
            real = full
            if stat.S_ISLNK(mode):
                real = Path(os.path.realpath(full))
                if not is_inside(real, root):
                    continue
                try:
                    mode = os.stat(real).st_mode
                except OSError:
                    continue
            if stat.S_ISREG(mode):
                yield full, real


def _glob_matches(glob: str, rel_root: str, rel_start: str) -> bool:
    if "/" not in glob:
        return fnmatch.fnmatchcase(rel_root.rsplit("/", 1)[-1], glob)
    candidates = {glob, glob.removeprefix("**/")}
    return any(fnmatch.fnmatchcase(rel, g) for rel in (rel_root, rel_start) for g in candidates)


def _search_file(display: str, real: Path, regex: re.Pattern[str], tally: _Tally, deadline: float) -> None:
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return
        if st.st_size > MAX_FILE_BYTES:
            tally.skipped_large += 1
            return
        data = fh.read()
    if looks_binary(data[:SNIFF_BYTES]):
        tally.skipped_binary += 1
        return
    tally.files_searched += 1
    found = False
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if number % 2000 == 0 and time.monotonic() > deadline:
            tally.out_of_time = True
            break
        if regex.search(line):
            found = True
            if len(tally.matches) >= MAX_MATCHES:
                tally.capped = True
                break
            shown_line = line if len(line) <= MAX_SHOWN_LINE else line[:MAX_SHOWN_LINE] + " [...]"
            tally.matches.append(f"{display}:{number}: {shown_line}")
    if found:
        tally.files_matched += 1


def _search(root: Path, start: Path, regex: re.Pattern[str], glob: str | None, quoted: str) -> str:
    if not start.exists():
        raise ToolRetry(f"path {quoted} does not exist")
    tally = _Tally()
    deadline = time.monotonic() + TIME_BUDGET_S
    for full, real in _walk(root, start):
        rel_root = relative_display(root, full)
        if glob:
            rel_start = full.relative_to(start).as_posix() if start.is_dir() else full.name
            if not _glob_matches(glob, rel_root, rel_start):
                continue
        _search_file(rel_root, real, regex, tally, deadline)
        if tally.capped or tally.out_of_time:
            break
        if time.monotonic() > deadline:
            tally.out_of_time = True
            break
    notes = []
    if tally.capped:
        notes.append(f"stopped at {MAX_MATCHES} matches; narrow the pattern, path or glob to see the rest")
    if tally.out_of_time:
        notes.append(f"stopped after {TIME_BUDGET_S:.0f}s; the search is incomplete, narrow path or glob")
    if tally.skipped_binary:
        notes.append(f"{tally.skipped_binary} binary file(s) skipped")
    if tally.skipped_large:
        notes.append(f"{tally.skipped_large} file(s) over {MAX_FILE_BYTES // (1024 * 1024)} MB skipped")
    where = f"under {quoted}" + (f" matching glob '{glob}'" if glob else "")
    if not tally.matches:
        summary = f"No matches for /{regex.pattern}/ in {tally.files_searched} file(s) {where}"
    else:
        summary = (
            f"[{len(tally.matches)} match{'es' if len(tally.matches) != 1 else ''} in "
            f"{tally.files_matched} file(s); {tally.files_searched} file(s) searched {where}]"
        )
    tail = "".join(f"\n[{note}]" for note in notes)
    return "\n".join([*tally.matches, summary]) + tail


class SearchFiles(WorkspaceTool):
    name = "search_files"
    description = (
        "Search the workspace's text files for a regular expression (Python syntax; add (?i) to "
        "ignore case). Returns matching lines as path:line: text. Optionally limit the search to a "
        "folder or file (path) and to file names matching a glob such as '*.py'."
    )
    parameters = schema(
        {
            "pattern": {"type": "string", "description": "Regular expression to look for, line by line."},
            "path": {"type": "string", "description": "Folder or file to search (default: whole workspace)."},
            "glob": {
                "type": "string",
                "description": "Only files whose name (or path) matches, e.g. '*.md'.",
            },
        },
        ["pattern"],
    )
    is_idempotent = True
    is_concurrency_safe = True

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        pattern = str_arg(args, "pattern", allow_empty=False)
        user_path = str_arg(args, "path", default=".") or "."
        glob = str_arg(args, "glob", default="") or None
        if len(pattern) > MAX_PATTERN:
            raise ToolRetry(f"pattern is too long (over {MAX_PATTERN} characters)")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolRetry(f"invalid regular expression {pattern!r}: {exc}") from None
        root = workspace_root(ctx)
        start = resolve_in_workspace(root, user_path)
        return ToolOutput(await asyncio.to_thread(_search, root, start, regex, glob, shown(user_path)))
