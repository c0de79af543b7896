"""Shared helpers of the benchmarks: percentiles, the machine, a real ``apiary serve`` process, SSE.

Nothing here measures anything by itself. Every benchmark module prints one JSON object on stdout
(``emit``), so ``run.py`` can run each in its own process and collect the results.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def pct(values: Iterable[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks; NaN for no values."""
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of a list of milliseconds, rounded for the report."""
    if not values_ms:
        return {"n": 0}
    return {"n": len(values_ms), "p50": round(pct(values_ms, 50), 4), "p90": round(pct(values_ms, 90), 4),
            "p99": round(pct(values_ms, 99), 4), "max": round(max(values_ms), 4),
            "mean": round(sum(values_ms) / len(values_ms), 4)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "implementation": platform.python_implementation(),
                            "sqlite": sqlite3.sqlite_version, "os": f"{platform.system()} {platform.release()}",
                            "cpus_logical": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0))}
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        info["cpu_model"] = found.group(1).strip() if found else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        mem = Path("/proc/meminfo").read_text()
        kb = int(re.search(r"^MemTotal:\s*(\d+)", mem, re.MULTILINE).group(1))  # type: ignore[union-attr]
        info["memory_gib"] = round(kb / 1024 / 1024, 1)
    except (OSError, AttributeError):
        pass
    try:
        load = os.getloadavg()
        info["loadavg_at_start"] = [round(x, 2) for x in load]
    except OSError:
        pass
    try:
        import aiohttp

        info["aiohttp"] = aiohttp.__version__
    except ImportError:
        pass
    try:
        import aiosqlite

        info["aiosqlite"] = aiosqlite.__version__
    except (ImportError, AttributeError):
        pass
    try:
        out = subprocess.run(["df", "--output=fstype", str(tempfile.gettempdir())], capture_output=True,
                             text=True, timeout=5).stdout.split()
        info["tmp_fs"] = out[-1] if out else "?"
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def emit(result: dict[str, Any]) -> None:
    """Print a benchmark's result as the single JSON line run.py reads."""
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def quick_flag() -> bool:
    return "--quick" in sys.argv


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def clean_env() -> dict[str, str]:
    """The environment for an apiary process: no APIARY_* settings leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- a real server -------------------------------------------------------------------------------


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    url: str
    home: Path
    started_at: float        # perf_counter just before the exec
    listening_at: float      # perf_counter when the "listening" line was read

    @property
    def api(self) -> str:
        return self.url + "/api"

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


async def start_server(home: Path, *, extra_env: dict[str, str] | None = None, timeout: float = 30.0) -> Server:
    """``python -m apiary serve --port 0 --home <home>``; returns once it printed its URL."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**clean_env(), **(extra_env or {})}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apiary", "--log-level", "warning", "serve", "--port", "0", "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=str(home), env=env)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode()
    listening = time.perf_counter()
    found = re.search(r"listening on (http://\S+)", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"unexpected first line from apiary serve: {line!r}")
    return Server(proc, found.group(1), home, started, listening)


async def sse_frames(resp: Any) -> AsyncIterator[tuple[int | None, dict[str, Any]]]:
    """(id, decoded data) per SSE frame of an aiohttp response; comment lines are skipped."""
    event_id: int | None = None
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event_id, json.loads("\n".join(data))
            event_id, data = None, []
        elif line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data.append(line[6:])
