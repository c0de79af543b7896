from __future__ import annotations

import json
import re
from pathlib import Path

from apiary.tools.base import ToolContext
from apiary.tools.file_tools import ReadFile
from apiary.tools.spillover import PREVIEW_CHARS, spill_large_result


def _preview(result: str) -> str:
    """The text after the bracketed header lines."""
    lines = result.split("\n")
    while lines and lines[0].startswith("["):
        lines.pop(0)
    return "\n".join(lines)


def test_acceptance_large_result_is_saved_whole(tmp_path: Path) -> None:
    content = "".join(f"row {i:05d} " + "x" * 89 + "\n" for i in range(400))  # 40,000 characters
    assert len(content) == 40_000
    result = spill_large_result("run_command", content, spillover_dir=tmp_path)
    saved = tmp_path / "run_command_1.txt"
    assert saved.read_text() == content
    assert str(saved) in result
    assert "40,000 characters" in result
    assert "read_file" in result
    assert "offset" in result
    assert "sample only" in result
    assert len(_preview(result)) <= PREVIEW_CHARS
    assert content.startswith(_preview(result))
    assert len(result) < 6000


def test_small_results_are_unchanged_but_saved(tmp_path: Path) -> None:
    assert spill_large_result("search_files", "short", spillover_dir=tmp_path) == "short"
    assert (tmp_path / "search_files_1.txt").read_text() == "short"


def test_numbering_continues_after_existing_files(tmp_path: Path) -> None:
    (tmp_path / "web_fetch_7.txt").write_text("old")
    (tmp_path / "web_fetch_notes.txt").write_text("ignored")
    spill_large_result("web_fetch", "a", spillover_dir=tmp_path)
    spill_large_result("web_fetch", "b", spillover_dir=tmp_path)
    assert (tmp_path / "web_fetch_8.txt").read_text() == "a"
    assert (tmp_path / "web_fetch_9.txt").read_text() == "b"


def test_json_is_pretty_printed_and_summarised(tmp_path: Path) -> None:
    data = {"items": [{"id": i, "name": "n" * 50} for i in range(600)], "total": 600, "next": None}
    content = json.dumps(data, separators=(",", ":"))
    assert len(content) > 30_000
    result = spill_large_result("list_items", content, spillover_dir=tmp_path)
    saved = (tmp_path / "list_items_1.txt").read_text()
    assert saved == json.dumps(data, indent=2)
    assert "JSON object with 3 top-level keys: items, total, next" in result
    assert len(_preview(result)) <= PREVIEW_CHARS


def test_json_array_summary(tmp_path: Path) -> None:
    content = json.dumps([{"a": i, "b": "x" * 100} for i in range(400)])
    result = spill_large_result("q", content, spillover_dir=tmp_path)
    assert "JSON array of 400 items; items are objects with keys: a, b" in result


def test_read_file_is_never_spilled(tmp_path: Path) -> None:
    small = spill_large_result("read_file", "tiny", spillover_dir=tmp_path)
    big = "     1\t" + "y" * 50_000
    result = spill_large_result("read_file", big, spillover_dir=tmp_path)
    assert small == "tiny"
    assert list(tmp_path.iterdir()) == []
    assert "offset/limit" in result
    assert len(result) <= 30_000


def test_without_folder_truncates_in_place() -> None:
    content = "z" * 40_000
    result = spill_large_result("run_command", content, spillover_dir=None)
    assert "not saved" in result
    assert "sample only" in result
    assert len(_preview(result)) <= PREVIEW_CHARS


def test_unsavable_folder_falls_back_to_truncation(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = spill_large_result("run_command", "z" * 40_000, spillover_dir=blocker / "sub")
    assert "not saved" in result


def test_unsafe_tool_names_stay_in_the_folder(tmp_path: Path) -> None:
    spill_large_result("../mcp/evil tool", "x", spillover_dir=tmp_path / "spill")
    files = list((tmp_path / "spill").iterdir())
    assert len(files) == 1
    assert re.fullmatch(r"[A-Za-z0-9_.-]+_1\.txt", files[0].name)


async def test_spilled_file_can_be_read_back(ctx: ToolContext) -> None:
    assert ctx.spillover_dir is not None
    content = "".join(f"line {i}\n" for i in range(5000))
    result = spill_large_result("run_command", content, spillover_dir=ctx.spillover_dir)
    path = re.search(r"saved to: (\S+)\]", result)
    assert path is not None
    out = await ReadFile().call({"path": path.group(1), "offset": 4000, "limit": 2}, ctx)
    assert (
        out.content
        == "  4000\tline 3999\n  4001\tline 4000\n[showing lines 4000-4001 of "
        + repr(path.group(1))
        + "; the file continues: call read_file with offset=4002 to read more]"
    )
