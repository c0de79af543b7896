from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from apiary.tools.base import ToolContext
from apiary.tools.file_tools import READ_BUDGET, EditFile, ListDirectory, ReadFile, WriteFile
from apiary.tools.workspace import workspace_tools


def test_factory_flags_and_schemas() -> None:
    tools = {t.spec.name: t for t in workspace_tools()}
    assert set(tools) == {
        "read_file",
        "list_directory",
        "search_files",
        "write_file",
        "edit_file",
        "undo_changes",
        "run_command",
    }
    for name in ("read_file", "list_directory", "search_files"):
        assert tools[name].is_idempotent
        assert tools[name].is_concurrency_safe
    for name in ("write_file", "edit_file", "undo_changes", "run_command"):
        assert not tools[name].is_idempotent
        assert not tools[name].is_concurrency_safe
    for tool in tools.values():
        assert tool.spec.parameters["type"] == "object"
        assert set(tool.spec.parameters.get("required", [])) <= set(tool.spec.parameters["properties"])


# --- read_file ---------------------------------------------------------------------------------


async def test_read_numbered(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "a.txt").write_text("one\ntwo\nthree\n")
    out = await ReadFile().call({"path": "a.txt"}, ctx)
    assert not out.is_error
    assert out.content == "     1\tone\n     2\ttwo\n     3\tthree"


async def test_read_offset_limit_and_continuation(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "a.txt").write_text("".join(f"line {i}\n" for i in range(1, 101)))
    out = await ReadFile().call({"path": "a.txt", "offset": 10, "limit": 5}, ctx)
    lines = out.content.splitlines()
    assert lines[0] == "    10\tline 10"
    assert lines[4] == "    14\tline 14"
    assert "offset=15" in lines[5]
    tail = await ReadFile().call({"path": "a.txt", "offset": "99"}, ctx)  # lenient string ints
    assert tail.content.splitlines() == ["    99\tline 99", "   100\tline 100"]


async def test_read_large_file_respects_budget(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "big.txt").write_text("x" * 100 + "\n" + ("y" * 80 + "\n") * 5000)
    out = await ReadFile().call({"path": "big.txt"}, ctx)
    assert len(out.content) <= READ_BUDGET + 200
    assert "call read_file with offset=" in out.content


async def test_read_long_line_is_cut(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "min.js").write_text("z" * 10_000 + "\nend\n")
    out = await ReadFile().call({"path": "min.js"}, ctx)
    assert "8,000 more characters on this line" in out.content
    assert out.content.endswith("     2\tend")


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda ws: (ws / "b.bin").write_bytes(b"\x89PNG\x00\x01"), {"path": "b.bin"}, "binary"),
        (lambda ws: None, {"path": "missing.txt"}, "does not exist"),
        (lambda ws: (ws / "d").mkdir(), {"path": "d"}, "is a directory"),
        (lambda ws: (ws / "s.txt").write_text("a\nb\n"), {"path": "s.txt", "offset": 9}, "past the end"),
        (lambda ws: None, {"path": "../etc/passwd"}, "outside the workspace"),
        (lambda ws: None, {"path": "/etc/passwd"}, "outside the workspace"),
        (lambda ws: None, {}, "missing required argument 'path'"),
        (lambda ws: None, {"path": "a", "limit": 0}, "between"),
        (lambda ws: os.mkfifo(ws / "fifo"), {"path": "fifo"}, "not a regular file"),
    ],
)
async def test_read_errors(ctx: ToolContext, workspace: Path, setup, args, message) -> None:  # type: ignore[no-untyped-def]
    setup(workspace)
    out = await ReadFile().call(args, ctx)
    assert out.is_error
    assert message in out.content


async def test_read_empty_file(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "e.txt").write_text("")
    out = await ReadFile().call({"path": "e.txt"}, ctx)
    assert not out.is_error
    assert "empty file" in out.content


async def test_read_spilled_file_by_absolute_path(ctx: ToolContext) -> None:
    assert ctx.spillover_dir is not None
    ctx.spillover_dir.mkdir()
    spilled = ctx.spillover_dir / "run_command_1.txt"
    spilled.write_text("spilled\n")
    out = await ReadFile().call({"path": str(spilled)}, ctx)
    assert out.content == "     1\tspilled"
    sneaky = await ReadFile().call({"path": f"{ctx.spillover_dir}/../ws/../../etc/passwd"}, ctx)
    assert sneaky.is_error


# --- write_file --------------------------------------------------------------------------------


async def test_write_creates_parents_atomically(ctx: ToolContext, workspace: Path) -> None:
    out = await WriteFile().call({"path": "deep/er/f.txt", "content": "héllo\nworld"}, ctx)
    assert not out.is_error, out.content
    assert (workspace / "deep/er/f.txt").read_text() == "héllo\nworld"
    assert "new file" in out.content
    assert "2 lines" in out.content
    assert [p.name for p in (workspace / "deep/er").iterdir()] == ["f.txt"]  # no temp file left


async def test_write_overwrites_and_keeps_mode(ctx: ToolContext, workspace: Path) -> None:
    target = workspace / "run.sh"
    target.write_text("old")
    target.chmod(0o750)
    out = await WriteFile().call({"path": "run.sh", "content": "new"}, ctx)
    assert "replaced" in out.content
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750


async def test_write_through_inside_symlink_writes_target(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "real.txt").write_text("old")
    os.symlink("real.txt", workspace / "link.txt")
    await WriteFile().call({"path": "link.txt", "content": "new"}, ctx)
    assert (workspace / "real.txt").read_text() == "new"
    assert (workspace / "link.txt").is_symlink()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"path": "../x.txt", "content": "x"}, "outside the workspace"),
        ({"path": ".apiary/undo/000001.json", "content": "{}"}, ".apiary"),
        ({"path": ".", "content": "x"}, "directory"),
        ({"path": "f.txt"}, "missing required argument 'content'"),
        ({"path": "f.txt", "content": 3}, "must be a string"),
        ({"path": "file.txt/child.txt", "content": "x"}, "write_file failed"),  # OSError -> error result
    ],
)
async def test_write_errors(ctx: ToolContext, workspace: Path, tmp_path: Path, args, message) -> None:  # type: ignore[no-untyped-def]
    (workspace / "file.txt").write_text("a file")
    out = await WriteFile().call(args, ctx)
    assert out.is_error
    assert message in out.content
    assert not (tmp_path / "x.txt").exists()


# --- edit_file ---------------------------------------------------------------------------------


async def test_edit_replaces_unique_text(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "m.py").write_text("a = 1\nb = 2\nc = 3\n")
    out = await EditFile().call({"path": "m.py", "old_text": "b = 2", "new_text": "b = 20"}, ctx)
    assert not out.is_error
    assert "line 2" in out.content
    assert (workspace / "m.py").read_text() == "a = 1\nb = 20\nc = 3\n"


async def test_edit_replace_all(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "m.txt").write_text("x x x")
    out = await EditFile().call({"path": "m.txt", "old_text": "x", "new_text": "y", "replace_all": True}, ctx)
    assert "3 occurrences" in out.content
    assert (workspace / "m.txt").read_text() == "y y y"


async def test_edit_crlf_file(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    out = await EditFile().call({"path": "w.txt", "old_text": "one\ntwo", "new_text": "1\n2"}, ctx)
    assert not out.is_error
    assert (workspace / "w.txt").read_bytes() == b"1\r\n2\r\nthree\r\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"path": "t.txt", "old_text": "absent", "new_text": "x"}, "not found"),
        ({"path": "t.txt", "old_text": "dup", "new_text": "x"}, "occurs 2 times"),
        ({"path": "t.txt", "old_text": "dup", "new_text": "dup"}, "identical"),
        ({"path": "t.txt", "old_text": "", "new_text": "x"}, "must not be empty"),
        ({"path": "nope.txt", "old_text": "a", "new_text": "b"}, "does not exist"),
        ({"path": "bin.dat", "old_text": "a", "new_text": "b"}, "binary"),
        ({"path": "latin.txt", "old_text": "a", "new_text": "b"}, "UTF-8"),
        ({"path": "/etc/hosts", "old_text": "a", "new_text": "b"}, "outside the workspace"),
    ],
)
async def test_edit_errors(ctx: ToolContext, workspace: Path, args, message) -> None:  # type: ignore[no-untyped-def]
    (workspace / "t.txt").write_text("dup and dup")
    (workspace / "bin.dat").write_bytes(b"a\x00b")
    (workspace / "latin.txt").write_bytes("caf\xe9 a".encode("latin-1"))
    out = await EditFile().call(args, ctx)
    assert out.is_error
    assert message in out.content
    assert (workspace / "t.txt").read_text() == "dup and dup"


# --- list_directory ----------------------------------------------------------------------------


async def test_list_directory(ctx: ToolContext, workspace: Path, tmp_path: Path) -> None:
    (workspace / "src").mkdir()
    (workspace / "README.md").write_text("12345")
    (workspace / ".hidden").write_text("")
    os.symlink("src", workspace / "code")
    os.symlink(tmp_path, workspace / "escape")
    out = await ListDirectory().call({}, ctx)
    assert not out.is_error
    lines = out.content.splitlines()
    assert lines[0].startswith("./ (5 entries")
    body = "\n".join(lines[1:])
    assert "file" in body
    assert "5  README.md" in body
    assert "dir" in body
    assert "src/" in body
    assert ".hidden" in body
    assert "code -> src/" in body
    assert "escape (points outside the workspace" in body
    assert "spill" not in body  # nothing of the outside folder is listed


async def test_list_subdir_and_errors(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "d").mkdir()
    (workspace / "d" / "x.txt").write_text("x")
    out = await ListDirectory().call({"path": "d"}, ctx)
    assert "x.txt" in out.content
    empty = workspace / "empty"
    empty.mkdir()
    assert "is empty" in (await ListDirectory().call({"path": "empty"}, ctx)).content
    for path, message in [("d/x.txt", "is a file"), ("nope", "does not exist"), ("..", "outside")]:
        res = await ListDirectory().call({"path": path}, ctx)
        assert res.is_error
        assert message in res.content


async def test_special_files_do_not_hang(ctx: ToolContext, workspace: Path) -> None:
    os.mkfifo(workspace / "fifo")
    write = await WriteFile().call({"path": "fifo", "content": "x"}, ctx)
    edit = await EditFile().call({"path": "fifo", "old_text": "a", "new_text": "b"}, ctx)
    assert write.is_error
    assert edit.is_error
    assert "not a regular file" in write.content
