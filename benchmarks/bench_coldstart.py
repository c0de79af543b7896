"""Benchmark 7: cold start, from process start to the first 200 on ``/api/health``.

What: ``python -m apiary serve --port <free port> --home <new empty folder>``, started R times (quick:
2, else 7). From just before the exec, ``GET /api/health`` is tried every 5 ms on that port (a refused
connection fails at once) until it answers 200; the time to the ``apiary listening on`` line is kept
too. The port is chosen beforehand so the client need not wait for the line. "Cold" here means a new
process and a new, empty home; the OS file cache is warm, as on any restart after the first. Twice:
with apiary's bytecode cached (a deployed install; the headline), and as this environment runs it
(``PYTHONDONTWRITEBYTECODE=1`` with an editable install: every start compiles apiary's sources).
Median and max of the runs; the start that fills the bytecode cache is not counted.

Why: restarts (deploys, crashes, ``kill -9`` then resume) are only cheap when the server is back
before a client's retry gives up.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clean_env, emit, quick_flag


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one(tmp: Path, n: int, env: dict[str, str]) -> dict[str, float]:
    home = tmp / f"home{n}"
    home.mkdir()
    port = free_port()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "apiary", "--log-level", "warning", "serve", "--port", str(port), "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=str(home), env=env)
    assert proc.stdout is not None
    line_at: list[float] = []

    async def watch_line() -> None:
        await proc.stdout.readline()   # type: ignore[union-attr]
        line_at.append(time.perf_counter())

    watcher = asyncio.create_task(watch_line())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/health") as resp:
                        if resp.status == 200:
                            ready = time.perf_counter()
                            break
                except (aiohttp.ClientError, OSError):
                    pass
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("server did not answer within 30 s")
                await asyncio.sleep(0.005)
        await asyncio.wait_for(watcher, 5)
    finally:
        proc.terminate()
        await proc.wait()
    return {"health_s": ready - t0, "listening_line_s": line_at[0] - t0 if line_at else float("nan")}


def envs(tmp: Path) -> dict[str, dict[str, str]]:
    """The two ways the code can be loaded. This workplace sets PYTHONDONTWRITEBYTECODE=1, and apiary is an
    editable install, so as things stand every start compiles apiary's own sources; a deployed install (or any
    machine without that variable) starts from cached bytecode. The cache goes to a temp folder
    (PYTHONPYCACHEPREFIX), so nothing is written under src/."""
    cached = {k: v for k, v in clean_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    as_is = clean_env()
    return {"bytecode cached": cached, "as this environment runs it": as_is}


async def main() -> None:
    quick = quick_flag()
    runs = 2 if quick else 7
    out: dict[str, Any] = {"runs": runs, "quick": quick,
                           "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="apiary-bench-cold-") as name:
        tmp = Path(name)
        for mode, env in envs(tmp).items():
            if mode.startswith("bytecode"):
                await one(tmp, -1, env)   # the first start fills the bytecode cache: not counted
            results = [await one(tmp, n + (0 if mode.startswith("bytecode") else 100), env) for n in range(runs)]
            health = [r["health_s"] for r in results]
            line = [r["listening_line_s"] for r in results]
            out["modes"][mode] = {"health_median_s": round(statistics.median(health), 4),
                                  "health_max_s": round(max(health), 4), "health_min_s": round(min(health), 4),
                                  "listening_line_median_s": round(statistics.median(line), 4),
                                  "all_health_s": [round(h, 4) for h in health]}
    out.update(out["modes"]["bytecode cached"])   # the headline: a start as deployed
    emit(out)


if __name__ == "__main__":
    asyncio.run(main())
