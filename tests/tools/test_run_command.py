from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from apiary.tools.base import ToolContext
from apiary.tools.shell import OUTPUT_CAP, RunCommand, command_env
from apiary.tools.workspace import workspace_tools


def live_members(pgid: int) -> list[int]:
    """Processes of the group that still run (zombies left to a non-reaping PID 1 do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    alive = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                alive.append(int(name))
    return alive


def _read_if_present(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text := _read_if_present(path):
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_runs_in_workspace_with_exit_code(ctx: ToolContext, workspace: Path) -> None:
    out = await RunCommand().call({"command": "pwd; echo err >&2; exit 3"}, ctx)
    assert not out.is_error
    assert str(workspace.resolve()) in out.content
    assert "err" in out.content  # stderr merged
    assert out.content.endswith("[exit code 3]")


async def test_no_output_and_closed_stdin(ctx: ToolContext) -> None:
    out = await RunCommand().call({"command": "cat"}, ctx)  # would hang if stdin were open
    assert out.content == "(no output)\n[exit code 0]"


async def test_timeout_kills_the_whole_group(ctx: ToolContext, workspace: Path) -> None:
    started = time.monotonic()
    out = await RunCommand().call(
        {"command": "echo $$ > pgid.txt; echo started; sleep 100 & sleep 100", "timeout_seconds": 1}, ctx
    )
    assert time.monotonic() - started < 5
    assert out.is_error
    assert "timed out after 1s" in out.content
    assert "started" in out.content  # output so far is kept
    pgid = int((workspace / "pgid.txt").read_text())
    assert live_members(pgid) == []


async def test_term_ignoring_processes_get_sigkill(ctx: ToolContext, workspace: Path) -> None:
    tool = RunCommand(kill_grace_s=0.3)
    out = await tool.call({"command": "trap '' TERM; echo $$ > pgid.txt; sleep 100", "timeout_seconds": 1}, ctx)
    assert out.is_error
    assert live_members(int((workspace / "pgid.txt").read_text())) == []


async def test_cancel_kills_the_whole_group(ctx: ToolContext, workspace: Path) -> None:
    task = asyncio.create_task(RunCommand().call({"command": "echo $$ > pgid.txt; sh -c 'sleep 100 & sleep 100'"}, ctx))
    pgid = int(await wait_for_file(workspace / "pgid.txt"))
    await asyncio.sleep(0.1)  # let the inner shell start both sleeps
    assert len(live_members(pgid)) >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_members(pgid) == []


async def test_output_is_capped_with_a_note(ctx: ToolContext) -> None:
    out = await RunCommand().call({"command": "yes abcdefghij | head -c 200000; echo; echo LAST"}, ctx)
    assert not out.is_error
    assert len(out.content) < OUTPUT_CAP + 500
    assert "output truncated: 200,006 bytes in total" in out.content
    assert out.content.startswith("abcdefghij")
    assert out.content.endswith("LAST\n\n[exit code 0]")


async def test_background_process_holding_output_does_not_block(ctx: ToolContext, workspace: Path) -> None:
    started = time.monotonic()
    out = await RunCommand().call({"command": "echo $$ > pgid.txt; sleep 30 & echo done"}, ctx)
    try:
        assert time.monotonic() - started < 5
        assert "done" in out.content
        assert "background processes still hold the output" in out.content
    finally:
        os.killpg(int((workspace / "pgid.txt").read_text()), signal.SIGKILL)


async def test_killed_by_signal_is_reported(ctx: ToolContext) -> None:
    out = await RunCommand().call({"command": "kill -9 $$"}, ctx)
    assert "killed by signal SIGKILL" in out.content


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "missing required argument 'command'"),
        ({"command": ""}, "must not be empty"),
        ({"command": "true", "timeout_seconds": 0}, "between 1 and 600"),
        ({"command": "true", "timeout_seconds": 601}, "between 1 and 600"),
        ({"command": "a\x00b"}, "NUL"),
    ],
)
async def test_argument_errors(ctx: ToolContext, args, message) -> None:  # type: ignore[no-untyped-def]
    out = await RunCommand().call(args, ctx)
    assert out.is_error
    assert message in out.content


async def test_missing_workspace_is_an_error(tmp_path: Path) -> None:
    out = await RunCommand().call({"command": "true"}, ToolContext(workspace=tmp_path / "nope"))
    assert out.is_error


def test_commands_can_be_disabled() -> None:
    names = [t.spec.name for t in workspace_tools(allow_commands=False)]
    assert "run_command" not in names
    assert "read_file" in names


def test_secrets_are_scrubbed_from_the_environment() -> None:
    env = command_env({"PATH": "/bin", "OPENAI_API_KEY": "sk", "GITHUB_TOKEN": "t", "HOME": "/h"})
    assert env == {"PATH": "/bin", "HOME": "/h"}


async def test_env_override(ctx: ToolContext) -> None:
    out = await RunCommand(env={"PATH": "/usr/bin:/bin", "GREETING": "hi"}).call({"command": "echo $GREETING"}, ctx)
    assert out.content.startswith("hi\n")
