"""Property test: no generated path lets a file tool read, list, search or write outside the workspace."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiary.core.errors import ToolRetry
from apiary.tools.base import ToolContext
from apiary.tools.file_tools import EditFile, ListDirectory, ReadFile, WriteFile
from apiary.tools.paths import resolve_in_workspace
from apiary.tools.search_tool import SearchFiles

SECRET = "OUTSIDE-SECRET-CONTENT"
OUTSIDE_NAME = "only_outside_name.dat"


def _snapshot(top: Path) -> dict[str, bytes | str]:
    """Every entry under ``top`` (not following links) with its content or link target."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(top))
            if full.is_symlink():
                out[rel] = "-> " + os.readlink(full)
            elif full.is_file():
                out[rel] = full.read_bytes()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("hostile")
    outside = base / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "sentinel.txt").write_text(SECRET + "\n")
    (outside / OUTSIDE_NAME).write_text(SECRET)
    (outside / "deeper" / "more.txt").write_text(SECRET)
    (base / "sibling.txt").write_text(SECRET)
    ws = base / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "a.txt").write_text("inside\n")
    links = {
        "abs_out": str(outside),
        "rel_out": "../outside",
        "file_out": str(outside / "sentinel.txt"),
        "dangling_out": str(outside / "nope.txt"),
        "dangling_out_dir": str(outside / "newdir" / "x.txt"),
        "to_root": "/",
        "to_parent": "..",
        "chain": "abs_out",
        "in_dir": "sub",
        "in_file": "sub/a.txt",
        "dangling_in": "sub/created.txt",
    }
    for name, target in links.items():
        os.symlink(target, ws / name)
    os.symlink("../../outside/deeper", ws / "sub" / "deep_out")
    return base, outside, ws


SEGMENTS = [
    "..",
    ".",
    "",
    "sub",
    "a.txt",
    "abs_out",
    "rel_out",
    "file_out",
    "dangling_out",
    "dangling_out_dir",
    "to_root",
    "to_parent",
    "chain",
    "in_dir",
    "in_file",
    "dangling_in",
    "deep_out",
    "outside",
    "sentinel.txt",
    "deeper",
    "more.txt",
    "ws",
    "sibling.txt",
    "etc",
    "passwd",
    "C:",
    "~",
    "new",
    "x\x00y",
    "n" * 256,
    "é" * 130,
    " ",
    "...",
    ".apiary",
]
SEPARATORS = ["/", "\\", "//", "/./", "\\\\"]


@st.composite
def hostile_paths(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(st.sampled_from(SEGMENTS), st.text(min_size=1, max_size=12)),
            min_size=1,
            max_size=8,
        )
    )
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(parts), max_size=len(parts)))
    path = "".join(p + s for p, s in zip(parts, seps, strict=True))
    if draw(st.booleans()):
        path = path.rstrip("/\\")
    prefix = draw(st.sampled_from(["", "", "", "/", "\\", "C:\\", "~/", "./", "../", "ABS_OUT", "ABS_WS"]))
    return prefix + path


async def _exercise(ctx: ToolContext, path: str) -> list[str]:
    outputs = [
        (await ReadFile().call({"path": path}, ctx)).content,
        (await ListDirectory().call({"path": path}, ctx)).content,
        (await SearchFiles().call({"pattern": "OUTSIDE-SECRET", "path": path}, ctx)).content,
        (await WriteFile().call({"path": path, "content": "written by hypothesis"}, ctx)).content,
        (await EditFile().call({"path": path, "old_text": SECRET, "new_text": "pwned"}, ctx)).content,
    ]
    return outputs


@settings(max_examples=300, deadline=None)
@given(raw=hostile_paths())
def test_hostile_paths_never_escape(world: tuple[Path, Path, Path], raw: str) -> None:
    base, outside, ws = world
    path = raw.replace("ABS_OUT", str(outside)).replace("ABS_WS", str(ws))
    root = Path(os.path.realpath(ws))
    before = _snapshot(outside)
    siblings = sorted(p.name for p in base.iterdir())

    try:
        resolved = resolve_in_workspace(ws, path)
    except ToolRetry:
        pass
    else:
        real = Path(os.path.realpath(resolved))
        assert real == root or real.is_relative_to(root), (path, resolved)

    ctx = ToolContext(workspace=ws)
    for out in asyncio.run(_exercise(ctx, path)):
        assert SECRET not in out, (path, out)
        assert OUTSIDE_NAME not in out, (path, out)
    assert _snapshot(outside) == before, path
    assert sorted(p.name for p in base.iterdir()) == siblings, path
    assert (base / "sibling.txt").read_text() == SECRET
