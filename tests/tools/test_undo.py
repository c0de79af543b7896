from __future__ import annotations

from pathlib import Path

from apiary.tools.base import ToolContext
from apiary.tools.file_tools import EditFile, WriteFile
from apiary.tools.undo import UndoChanges, UndoJournal


async def test_undo_deletes_created_file_and_folders(ctx: ToolContext, workspace: Path) -> None:
    await WriteFile().call({"path": "a/b/new.txt", "content": "x"}, ctx)
    out = await UndoChanges().call({}, ctx)
    assert not out.is_error
    assert "Deleted 'a/b/new.txt'" in out.content
    assert not (workspace / "a").exists()


async def test_undo_keeps_folders_that_gained_other_files(ctx: ToolContext, workspace: Path) -> None:
    await WriteFile().call({"path": "a/b/new.txt", "content": "x"}, ctx)
    (workspace / "a" / "other.txt").write_text("keep")
    await UndoChanges().call({}, ctx)
    assert not (workspace / "a" / "b").exists()
    assert (workspace / "a" / "other.txt").read_text() == "keep"


async def test_undo_restores_in_reverse_order(ctx: ToolContext, workspace: Path) -> None:
    f = workspace / "f.txt"
    f.write_text("v0")
    await WriteFile().call({"path": "f.txt", "content": "v1"}, ctx)
    await EditFile().call({"path": "f.txt", "old_text": "v1", "new_text": "v2"}, ctx)
    assert f.read_text() == "v2"
    first = await UndoChanges().call({}, ctx)
    assert "Restored 'f.txt'" in first.content
    assert "edit_file" in first.content
    assert f.read_text() == "v1"
    await UndoChanges().call({}, ctx)
    assert f.read_text() == "v0"
    empty = await UndoChanges().call({}, ctx)
    assert empty.is_error
    assert "nothing to undo" in empty.content


async def test_failed_changes_are_not_journaled(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "f.txt").write_text("keep")
    await EditFile().call({"path": "f.txt", "old_text": "absent", "new_text": "x"}, ctx)
    await WriteFile().call({"path": "f.txt/child", "content": "x"}, ctx)
    out = await UndoChanges().call({}, ctx)
    assert out.is_error
    assert "nothing to undo" in out.content


async def test_journal_keeps_only_recent_entries(workspace: Path) -> None:
    journal = UndoJournal(workspace, keep=3)
    target = workspace / "f.txt"
    for i in range(6):
        journal.record(target, (f"v{i}".encode(), 0o644), tool="write_file", created_dirs=[])
    assert len(list(journal.folder.glob("*.json"))) == 3
    assert len(list(journal.folder.glob("*.bin"))) == 3
    journal.undo_last()
    assert target.read_text() == "v5"


async def test_too_large_previous_content_cannot_be_undone(ctx: ToolContext, workspace: Path) -> None:
    journal = UndoJournal(workspace, max_bytes=4)
    target = workspace / "f.txt"
    journal.record(target, (b"too large", 0o644), tool="write_file", created_dirs=[])
    out = await UndoChanges().call({}, ctx)
    assert out.is_error
    assert "too large" in out.content
    assert not list(journal.folder.glob("*.json"))  # dropped, so older entries stay reachable


async def test_corrupt_entry_is_dropped(ctx: ToolContext, workspace: Path) -> None:
    folder = workspace / ".apiary" / "undo"
    folder.mkdir(parents=True)
    (folder / "000001.json").write_text("{not json")
    out = await UndoChanges().call({}, ctx)
    assert out.is_error
    assert "unreadable" in out.content
    assert not (folder / "000001.json").exists()
