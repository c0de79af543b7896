from __future__ import annotations

import os
from pathlib import Path

import pytest

from apiary.tools.base import ToolContext
from apiary.tools.search_tool import MAX_MATCHES, SearchFiles


@pytest.fixture
def tree(workspace: Path, tmp_path: Path) -> Path:
    (workspace / "src" / "pkg").mkdir(parents=True)
    (workspace / "src" / "pkg" / "mod.py").write_text("def alpha():\n    return 1\n\ndef beta():\n    pass\n")
    (workspace / "notes.md").write_text("alpha notes\nnothing\n")
    (workspace / "img.png").write_bytes(b"\x89PNG\x00alpha")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("alpha in git\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "leak.txt").write_text("alpha secret\n")
    os.symlink(outside, workspace / "out_dir")
    os.symlink(outside / "leak.txt", workspace / "out_file.txt")
    os.symlink("notes.md", workspace / "in_link.md")
    return workspace


async def test_search_finds_lines(ctx: ToolContext, tree: Path) -> None:
    out = await SearchFiles().call({"pattern": r"alpha"}, ctx)
    assert not out.is_error
    assert "src/pkg/mod.py:1: def alpha():" in out.content
    assert "notes.md:1: alpha notes" in out.content
    assert "in_link.md:1: alpha notes" in out.content  # inside symlink followed
    assert "secret" not in out.content  # outside symlinks never read
    assert ".git" not in out.content
    assert "img.png" not in out.content
    assert "1 binary file(s) skipped" in out.content


async def test_search_glob_and_path(ctx: ToolContext, tree: Path) -> None:
    out = await SearchFiles().call({"pattern": "^def ", "glob": "*.py"}, ctx)
    assert out.content.count("src/pkg/mod.py:") == 2
    assert "notes.md" not in out.content
    out = await SearchFiles().call({"pattern": "alpha", "path": "src"}, ctx)
    assert "mod.py" in out.content
    assert "notes.md" not in out.content
    out = await SearchFiles().call({"pattern": "alpha", "path": "notes.md"}, ctx)
    assert out.content.startswith("notes.md:1:")
    out = await SearchFiles().call({"pattern": "(?i)ALPHA", "glob": "src/**/*.py"}, ctx)
    assert "mod.py:1:" in out.content
    out = await SearchFiles().call({"pattern": "alpha", "path": ".git"}, ctx)  # named explicitly
    assert ".git/config:1:" in out.content


async def test_search_no_match_is_not_an_error(ctx: ToolContext, tree: Path) -> None:
    out = await SearchFiles().call({"pattern": "zzz_nothing"}, ctx)
    assert not out.is_error
    assert out.content.startswith("No matches")


async def test_search_caps_results(ctx: ToolContext, workspace: Path) -> None:
    (workspace / "many.txt").write_text("hit\n" * (MAX_MATCHES + 50))
    out = await SearchFiles().call({"pattern": "hit"}, ctx)
    assert out.content.count("many.txt:") == MAX_MATCHES
    assert f"stopped at {MAX_MATCHES} matches" in out.content


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"pattern": "("}, "invalid regular expression"),
        ({"pattern": ""}, "must not be empty"),
        ({"pattern": "a", "path": "../"}, "outside the workspace"),
        ({"pattern": "a", "path": "out_dir"}, "outside the workspace"),
        ({"pattern": "a", "path": "missing"}, "does not exist"),
    ],
)
async def test_search_errors(ctx: ToolContext, tree: Path, args, message) -> None:  # type: ignore[no-untyped-def]
    out = await SearchFiles().call(args, ctx)
    assert out.is_error
    assert message in out.content
