"""read_file, write_file, edit_file and list_directory: file tools confined to the workspace.

Errors follow the convention of ``_common``: the model gets ``ToolOutput(is_error=True)``. Every
path goes through ``paths.resolve_in_workspace``; ``read_file`` also accepts the absolute path of a
spilled tool result inside ``ctx.spillover_dir`` (that is where the spillover header sends it).
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from apiary.core.errors import ToolRetry
from apiary.tools._common import (
    SNIFF_BYTES,
    WorkspaceTool,
    atomic_write,
    bool_arg,
    int_arg,
    looks_binary,
    make_parents,
    read_existing,
    refuse_internal,
    schema,
    str_arg,
    workspace_root,
)
from apiary.tools.base import ToolContext, ToolOutput
from apiary.tools.paths import is_inside, relative_display, resolve_in_workspace, shown
from apiary.tools.undo import UndoJournal

DEFAULT_LIMIT = 2000  # lines per read_file call
MAX_LIMIT = 10_000
MAX_LINE_CHARS = 2000  # longer lines are cut (a note says how much)
READ_BUDGET = 25_000  # characters per read_file result: stays under the 30,000 spillover threshold
MAX_LIST_ENTRIES = 1000

_PATH = {"type": "string", "description": "File path relative to the workspace root."}


def _resolve_readable(ctx: ToolContext, user_path: str) -> Path:
    """Workspace paths, plus absolute paths inside the spillover folder (read-only)."""
    if ctx.spillover_dir is not None and os.path.isabs(user_path) and "\x00" not in user_path:
        wanted = Path(os.path.normpath(user_path))
        for base in (Path(os.path.realpath(ctx.spillover_dir)), Path(os.path.abspath(ctx.spillover_dir))):
            if is_inside(wanted, base):
                return resolve_in_workspace(base, wanted.relative_to(base).as_posix())
    return resolve_in_workspace(ctx.workspace, user_path)


def _open_regular(path: Path, quoted: str) -> io.BufferedReader:
    # O_NONBLOCK: opening a FIFO must not hang the tool; O_NOFOLLOW: no link swapped in since the check.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ToolRetry(f"file {quoted} does not exist") from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise ToolRetry(f"{quoted} is a directory; use list_directory to see what it contains")
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ToolRetry(f"{quoted} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _lines(text: io.TextIOBase) -> Iterator[tuple[str, int]]:
    """(line without its ending, characters cut from it); bounded memory even for huge lines."""
    while True:
        chunk = text.readline(MAX_LINE_CHARS + 1)
        if not chunk:
            return
        if chunk.endswith("\n") or len(chunk) <= MAX_LINE_CHARS:
            yield chunk.rstrip("\n"), 0
            continue
        cut = len(chunk) - MAX_LINE_CHARS
        while True:  # skip the rest of an over-long line
            rest = text.readline(65536)
            if not rest:
                break
            cut += len(rest.rstrip("\n"))
            if rest.endswith("\n"):
                break
        yield chunk[:MAX_LINE_CHARS], cut


def _read_slice(path: Path, quoted: str, offset: int, limit: int) -> str:
    with _open_regular(path, quoted) as fh:
        size = os.fstat(fh.fileno()).st_size
        if looks_binary(fh.read(SNIFF_BYTES)):
            raise ToolRetry(f"{quoted} looks like a binary file ({size:,} bytes); read_file only shows text files")
        fh.seek(0)
        text = io.TextIOWrapper(fh, encoding="utf-8", errors="replace")
        out: list[str] = []
        used = 0
        last = 0
        more = False
        for number, (line, cut) in enumerate(_lines(text), start=1):
            if number < offset:
                last = number
                continue
            if len(out) >= limit:
                more = True
                break
            if cut:
                line += f" [... {cut:,} more characters on this line]"
            rendered = f"{number:>6}\t{line}"
            if out and used + len(rendered) + 1 > READ_BUDGET:
                more = True
                break
            out.append(rendered)
            used += len(rendered) + 1
            last = number
    if not out:
        if last == 0:
            return f"(empty file: {quoted})"
        raise ToolRetry(f"offset {offset} is past the end of {quoted}, which has {last} lines")
    if more:
        out.append(
            f"[showing lines {offset}-{last} of {quoted}; the file continues: "
            f"call read_file with offset={last + 1} to read more]"
        )
    return "\n".join(out)


class ReadFile(WorkspaceTool):
    name = "read_file"
    description = (
        "Read a text file from the workspace. Lines come numbered (number, tab, text). Large files "
        f"are read in parts: offset is the first line to show (1-based), limit how many lines "
        f"(default {DEFAULT_LIMIT}). Lines over {MAX_LINE_CHARS} characters are shortened."
    )
    parameters = schema(
        {
            "path": _PATH,
            "offset": {"type": "integer", "minimum": 0, "description": "First line to read, 1-based."},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "description": "Lines to read."},
        },
        ["path"],
    )
    is_idempotent = True
    is_concurrency_safe = True

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        user_path = str_arg(args, "path", allow_empty=False)
        offset = max(1, int_arg(args, "offset", default=1, minimum=0, maximum=2**31))
        limit = int_arg(args, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        path = _resolve_readable(ctx, user_path)
        return ToolOutput(await asyncio.to_thread(_read_slice, path, shown(user_path), offset, limit))


def _write_journaled(root: Path, path: Path, data: bytes, previous: tuple[bytes, int] | None, tool: str) -> None:
    created = make_parents(path)
    journal = UndoJournal(root)
    entry = journal.record(path, previous, tool=tool, created_dirs=created)
    try:
        atomic_write(path, data, mode=previous[1] if previous else None)
    except BaseException:
        journal.discard(entry)  # nothing changed, so there is nothing to undo
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise


class WriteFile(WorkspaceTool):
    name = "write_file"
    description = (
        "Create or overwrite a text file in the workspace with the given content (UTF-8). Missing "
        "parent folders are created. The previous content can be restored with undo_changes."
    )
    parameters = schema(
        {"path": _PATH, "content": {"type": "string", "description": "The complete new file content."}},
        ["path", "content"],
    )

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        user_path = str_arg(args, "path", allow_empty=False)
        content = str_arg(args, "content")
        root = workspace_root(ctx)
        path = resolve_in_workspace(root, user_path)
        quoted = shown(user_path)
        refuse_internal(root, path, quoted)
        data = content.encode("utf-8", "replace")  # lone surrogates from JSON cannot be stored

        def work() -> str:
            if path == root or path.is_dir():
                raise ToolRetry(f"{quoted} is a directory; give a file path")
            previous = read_existing(path)
            _write_journaled(root, path, data, previous, self.name)
            lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
            what = "replaced its previous content" if previous is not None else "new file"
            return f"Wrote {len(data):,} bytes ({lines} lines) to {quoted} ({what})"

        return ToolOutput(await asyncio.to_thread(work))


class EditFile(WorkspaceTool):
    name = "edit_file"
    description = (
        "Replace exact text in a workspace file. old_text must match the file exactly (whitespace and "
        "indentation included) and occur once, unless replace_all is true. Read the file first."
    )
    parameters = schema(
        {
            "path": _PATH,
            "old_text": {"type": "string", "description": "Text to find, copied exactly from the file."},
            "new_text": {"type": "string", "description": "Replacement text."},
            "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)."},
        },
        ["path", "old_text", "new_text"],
    )

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        user_path = str_arg(args, "path", allow_empty=False)
        old = str_arg(args, "old_text", allow_empty=False)
        new = str_arg(args, "new_text")
        replace_all = bool_arg(args, "replace_all", default=False)
        if old == new:
            raise ToolRetry("old_text and new_text are identical; there is nothing to change")
        root = workspace_root(ctx)
        path = resolve_in_workspace(root, user_path)
        quoted = shown(user_path)
        refuse_internal(root, path, quoted)

        def work() -> str:
            if path.is_dir():
                raise ToolRetry(f"{quoted} is a directory")
            previous = read_existing(path)
            if previous is None:
                raise ToolRetry(f"file {quoted} does not exist; use write_file to create it")
            if looks_binary(previous[0][:SNIFF_BYTES]):
                raise ToolRetry(f"{quoted} looks like a binary file; edit_file only edits text files")
            try:
                text = previous[0].decode("utf-8")
            except UnicodeDecodeError:
                raise ToolRetry(f"{quoted} is not valid UTF-8; edit_file only edits UTF-8 text") from None
            find, repl = old, new
            if find not in text and "\r\n" in text and "\n" in find:
                find, repl = find.replace("\n", "\r\n"), repl.replace("\n", "\r\n")  # CRLF file
            count = text.count(find)
            if count == 0:
                raise ToolRetry(
                    f"old_text was not found in {quoted}. It must match exactly, including whitespace "
                    "and indentation; read the file again and copy the text"
                )
            if count > 1 and not replace_all:
                raise ToolRetry(
                    f"old_text occurs {count} times in {quoted}; include more surrounding text to make "
                    "it unique, or set replace_all to true"
                )
            line = text.count("\n", 0, text.index(find)) + 1
            updated = text.replace(find, repl) if replace_all else text.replace(find, repl, 1)
            _write_journaled(root, path, updated.encode("utf-8", "replace"), previous, self.name)
            done = count if replace_all else 1
            plural = "s" if done != 1 else ""
            return f"Edited {quoted}: replaced {done} occurrence{plural} (first at line {line})"

        return ToolOutput(await asyncio.to_thread(work))


def _list(root: Path, path: Path, quoted: str) -> str:
    if not path.exists():
        raise ToolRetry(f"directory {quoted} does not exist")
    if not path.is_dir():
        raise ToolRetry(f"{quoted} is a file, not a directory; use read_file to read it")
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    rows: list[str] = []
    for entry in entries[:MAX_LIST_ENTRIES]:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # removed while listing
        if stat.S_ISLNK(st.st_mode):
            target = Path(os.path.realpath(entry.path))
            if is_inside(target, root):
                where = f"-> {relative_display(root, target)}" + ("/" if target.is_dir() else "")
            else:
                where = "(points outside the workspace; not followed)"
            rows.append(f"symlink  {'-':>12}  {entry.name} {where}")
        elif stat.S_ISDIR(st.st_mode):
            rows.append(f"dir      {'-':>12}  {entry.name}/")
        elif stat.S_ISREG(st.st_mode):
            rows.append(f"file     {st.st_size:>12,}  {entry.name}")
        else:
            rows.append(f"other    {'-':>12}  {entry.name}")
    label = relative_display(root, path)
    if not rows:
        return f"{label}/ is empty"
    head = f"{label}/ ({len(entries)} entr{'ies' if len(entries) != 1 else 'y'}; type, size in bytes, name)"
    if len(entries) > MAX_LIST_ENTRIES:
        rows.append(f"[... {len(entries) - MAX_LIST_ENTRIES:,} more entries not shown]")
    return "\n".join([head, *rows])


class ListDirectory(WorkspaceTool):
    name = "list_directory"
    description = (
        "List a workspace folder (default: the workspace root): every entry, hidden ones included, "
        "with its type and size."
    )
    parameters = schema({"path": {"type": "string", "description": "Folder relative to the workspace root."}})
    is_idempotent = True
    is_concurrency_safe = True

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        user_path = str_arg(args, "path", default=".")
        root = workspace_root(ctx)
        path = resolve_in_workspace(root, user_path)
        return ToolOutput(await asyncio.to_thread(_list, root, path, shown(user_path or ".")))
