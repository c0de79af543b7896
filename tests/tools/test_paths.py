from __future__ import annotations

import os
from pathlib import Path

import pytest

from apiary.core.errors import ToolRetry
from apiary.tools.paths import resolve_in_workspace


def _snapshot(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@pytest.fixture
def tree(tmp_path: Path, workspace: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "a.txt").write_text("a")
    os.symlink(outside, workspace / "out_dir")  # absolute target
    os.symlink("../outside/secret.txt", workspace / "out_file")  # relative target
    os.symlink(outside / "missing.txt", workspace / "dangling_out")
    os.symlink("sub", workspace / "in_dir")
    os.symlink("sub/new.txt", workspace / "dangling_in")
    os.symlink("out_dir", workspace / "chain")  # inside link to an outside link
    return workspace


@pytest.mark.parametrize(
    ("user_path", "expected"),
    [
        ("sub/a.txt", "sub/a.txt"),
        ("./sub//a.txt", "sub/a.txt"),
        ("sub/../sub/a.txt", "sub/a.txt"),
        ("new/dir/file.txt", "new/dir/file.txt"),
        ("in_dir/a.txt", "sub/a.txt"),
        ("dangling_in", "sub/new.txt"),
        ("sub\\a.txt", "sub/a.txt"),
        ("in_dir/../sub", "sub"),
    ],
)
def test_inside_paths_resolve(tree: Path, user_path: str, expected: str) -> None:
    root = Path(os.path.realpath(tree))
    assert resolve_in_workspace(tree, user_path) == root / expected


@pytest.mark.parametrize("user_path", ["", ".", "./", "sub/.."])
def test_workspace_itself(tree: Path, user_path: str) -> None:
    assert resolve_in_workspace(tree, user_path) == Path(os.path.realpath(tree))


@pytest.mark.parametrize(
    ("user_path", "reason"),
    [
        ("/etc/passwd", "outside the workspace"),
        ("//etc", "outside the workspace"),
        ("\\etc\\passwd", "outside the workspace"),
        ("C:\\Windows", "outside the workspace"),
        ("..", "outside the workspace"),
        ("../outside/secret.txt", "outside the workspace"),
        ("sub/../../outside", "outside the workspace"),
        ("..\\outside", "outside the workspace"),
        ("new/../../x", "outside the workspace"),
        ("out_dir/secret.txt", "symlink"),
        ("out_dir", "symlink"),
        ("out_file", "symlink"),
        ("dangling_out", "symlink"),
        ("chain/secret.txt", "symlink"),
        ("in_dir/../out_dir/x", "symlink"),
        ("a\x00b", "NUL"),
        ("x" * 300, "longer than 255"),
        ("a/" * 3000, "too long"),
    ],
)
def test_escapes_are_refused(tree: Path, tmp_path: Path, user_path: str, reason: str) -> None:
    before = _snapshot(tmp_path)
    with pytest.raises(ToolRetry, match=reason):
        resolve_in_workspace(tree, user_path)
    assert _snapshot(tmp_path) == before


def test_non_string_refused(workspace: Path) -> None:
    with pytest.raises(ToolRetry, match="string"):
        resolve_in_workspace(workspace, 42)  # type: ignore[arg-type]


def test_workspace_behind_a_symlink(tmp_path: Path, workspace: Path) -> None:
    alias = tmp_path / "alias"
    os.symlink(workspace, alias)
    assert resolve_in_workspace(alias, "f.txt") == Path(os.path.realpath(workspace)) / "f.txt"


def test_symlink_loop_stays_inside(workspace: Path) -> None:
    os.symlink("b", workspace / "a")
    os.symlink("a", workspace / "b")
    path = resolve_in_workspace(workspace, "a")
    assert path.is_relative_to(os.path.realpath(workspace))
