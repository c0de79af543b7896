"""run_command: a shell command in the agent's workspace, with a timeout and capped output.

The command runs as ``/bin/sh -c`` in the workspace folder, in a new session (so it is the leader
of its own process group), with stdin closed and stdout and stderr merged into one pipe. On a
timeout and on cancellation of the calling task the whole group gets SIGTERM, then SIGKILL after
a short grace, so no background process outlives the call; the cancellation is then re-raised.

When the command itself has finished but background processes still hold the output pipe, the
output is drained briefly and then closed (those processes keep running; redirect their output,
e.g. ``server > log 2>&1 &``, to run something in the background on purpose).

This is not a sandbox: the command can touch anything the apiary process can. Only the file tools
are confined to the workspace. Variables whose names look like secrets are removed from the
command's environment so ``env`` does not hand the model apiary's API keys.

Errors follow the convention of ``_common``: timeouts, bad arguments and failures to start come
back as ``ToolOutput(is_error=True)``; a command that ran reports its exit code in a normal result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

from apiary.core.errors import ToolRetry
from apiary.tools._common import WorkspaceTool, int_arg, schema, str_arg, workspace_root
from apiary.tools.base import ToolContext, ToolOutput

DEFAULT_TIMEOUT_S = 60
MAX_TIMEOUT_S = 600
OUTPUT_CAP = 28_000  # characters kept inline; with the notes it stays under the 30,000 spillover threshold
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL
DRAIN_S = 1.0  # output still arriving after the command has exited
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


def command_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for commands: the given one (default ``os.environ``) minus likely secrets."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not _SECRET_NAME.search(k)}


class _Output:
    """Keeps the first and last ``cap`` bytes of a stream and counts the rest (bounded memory)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.cap:
                del self.tail[: len(self.tail) - self.cap]

    def text(self) -> str:
        whole = self.head.decode("utf-8", "replace")
        if not self.tail and len(whole) <= self.cap:
            return whole
        half = self.cap // 2
        first = whole[:half]
        last = (bytes(self.head) + bytes(self.tail))[-self.cap :].decode("utf-8", "replace")[-half:]
        return (
            f"{first}\n[... output truncated: {self.total:,} bytes in total; showing the first "
            f"{len(first):,} and the last {len(last):,} characters ...]\n{last}"
        )


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False once the group has no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # only possible if the pgid was reused by someone else; never escalate
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: where PID 1 does not reap
    orphans (some containers) they stay forever, and ``killpg(pgid, 0)`` alone would wait the full
    grace every time."""
    if not os.path.isdir("/proc/self"):
        return _signal_group(pgid, 0)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the command's process group, wait up to ``grace``, then SIGKILL whatever is left."""
    pgid = proc.pid  # start_new_session: the shell is its group's leader, pgid == pid
    try:
        if _signal_group(pgid, signal.SIGTERM):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while loop.time() < deadline and _group_alive(pgid):
                await asyncio.sleep(0.05)
    finally:
        # Also reached when cancelled again mid-cleanup: SIGKILL needs no await.
        _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await proc.wait()  # reap the shell so no zombie of ours is left


async def _pump(reader: asyncio.StreamReader, sink: _Output) -> None:
    while chunk := await reader.read(65536):
        sink.add(chunk)


async def run_shell(
    command: str,
    *,
    cwd: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cap: int = OUTPUT_CAP,
    grace: float = KILL_GRACE_S,
) -> tuple[str, int | None, bool, bool]:
    """Run ``command``: (output, exit code, timed out, output left to background processes).

    Cancel-safe: see the module docstring."""
    loop = asyncio.get_running_loop()
    # Our own pipe instead of PIPE: asyncio's wait() would otherwise wait for every process holding
    # the pipe, and closing our end is the only way to stop listening to leftover background jobs.
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            cwd=cwd,
            env=dict(command_env() if env is None else env),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    sink = _Output(cap)
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    transport: asyncio.ReadTransport | None = None
    pump: asyncio.Task[None] | None = None
    timed_out = detached = False
    try:  # from here on the process exists: any exit from this block must stop its group first
        reader = asyncio.StreamReader(limit=2**20)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        pump = asyncio.create_task(_pump(reader, sink))
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await _stop_group(proc, grace)
        done, _ = await asyncio.wait({pump}, timeout=DRAIN_S)
        detached = not done and not timed_out
    except BaseException:
        await _stop_group(proc, grace)  # cancelled: leave nothing running, then let it propagate
        raise
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
        if transport is not None:
            transport.close()
        pipe.close()  # no-op when the transport already closed it
    return sink.text(), proc.returncode, timed_out, detached


class RunCommand(WorkspaceTool):
    name = "run_command"
    description = (
        "Run a shell command (/bin/sh -c) in the workspace folder and return its combined "
        f"stdout and stderr (long output is shortened to {OUTPUT_CAP:,} characters) and exit code. "
        f"Stdin is closed. Default timeout {DEFAULT_TIMEOUT_S}s, at most {MAX_TIMEOUT_S}s; on a "
        "timeout the command and everything it started are stopped."
    )
    parameters = schema(
        {
            "command": {"type": "string", "description": "The shell command line."},
            "timeout_seconds": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_TIMEOUT_S,
                "description": f"Seconds before the command is stopped (default {DEFAULT_TIMEOUT_S}).",
            },
        },
        ["command"],
    )

    def __init__(self, *, env: Mapping[str, str] | None = None, kill_grace_s: float = KILL_GRACE_S) -> None:
        super().__init__()
        self._env = env
        self._grace = kill_grace_s

    async def run(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        command = str_arg(args, "command", allow_empty=False)
        if "\x00" in command:
            raise ToolRetry("command contains a NUL byte")
        timeout = int_arg(args, "timeout_seconds", default=DEFAULT_TIMEOUT_S, minimum=1, maximum=MAX_TIMEOUT_S)
        root = workspace_root(ctx)
        if not root.is_dir():
            raise ToolRetry("the workspace folder does not exist yet; create a file in it first")
        output, code, timed_out, detached = await run_shell(
            command, cwd=str(root), timeout=timeout, env=self._env, grace=self._grace
        )
        body = output if output else "(no output)"
        if detached:
            body += "\n[background processes still hold the output; anything more they print is discarded]"
        if timed_out:
            return ToolOutput(
                f"{body}\n[command timed out after {timeout}s; it was stopped with every process it started]",
                is_error=True,
            )
        if code is not None and code < 0:
            return ToolOutput(f"{body}\n[killed by signal {signal.Signals(-code).name}]")
        return ToolOutput(f"{body}\n[exit code {code}]")
