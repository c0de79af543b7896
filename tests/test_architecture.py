"""Imports point down the layers, heavy third-party imports live in their owner, and no module reads
the environment or uses ``global`` outside the places allowed (ARCHITECTURE 2, 4)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "apiary"
LAYER = {"core": 0, "llm": 1, "tools": 1, "storage": 1, "bus": 1, "agent": 2, "sessions": 4, "colonies": 3,
         "server": 5, "cli": 6, "__init__": 0, "__main__": 7}
SIDEWAYS_OK = {("bus", "storage")}
OWNER = {"aiohttp": {"server"}, "click": {"cli"}, "openai": {"llm"}, "anthropic": {"llm"},
         "aiosqlite": {"storage"}, "croniter": {"colonies"}, "mcp": {"tools"}, "psycopg": {"storage"},
         "psycopg_pool": {"storage"}}


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def imported(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(("apiary", *path.relative_to(SRC).parent.parts))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.append(node.module)
    return names


def test_imports_point_down() -> None:
    problems = []
    for path in SRC.rglob("*.py"):
        here = layer_of(path)
        for target in imported(path):
            top, _, rest = target.partition(".")
            if top == "apiary" and rest:
                there = rest.split(".")[0]
                if there not in LAYER:
                    continue
                if not (there == here or LAYER[there] < LAYER[here] or (here, there) in SIDEWAYS_OK):
                    problems.append(f"{path.relative_to(SRC)}: {here} must not import {there}")
            elif top in OWNER and here not in OWNER[top]:
                problems.append(f"{path.relative_to(SRC)}: only {OWNER[top]} may import {top}")
    assert problems == []


def test_environment_is_read_only_by_config() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        # config.py reads settings; shell.py only hands commands a copy of it with secrets removed.
        if ("os.environ" in text or "os.getenv" in text) and path.name not in ("config.py", "shell.py"):
            offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def test_no_global_statements() -> None:
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if any(isinstance(n, ast.Global) for n in ast.walk(ast.parse(p.read_text())))]
    assert offenders == []
