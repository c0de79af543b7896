from __future__ import annotations

from pathlib import Path

import pytest

from apiary.tools.base import ToolContext


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def ctx(workspace: Path, tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=workspace, session_id="s1", spillover_dir=tmp_path / "spill")
