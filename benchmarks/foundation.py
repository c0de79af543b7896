"""Foundation benchmark: cold start, chat latency over SSE, and memory per idle session.

Runs real ``python -m apiary serve`` processes on 127.0.0.1 with the offline demo model and a
temporary APIARY_HOME, so it needs no network and no key:

    .venv/bin/python benchmarks/foundation.py [--quick]

Prints a table and writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

RESULTS = Path(__file__).parent / "results" / "foundation.json"


# -- the server process --------------------------------------------------------------------------

class Server:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> float:
        """Start it; return seconds from spawn to the first 200 on /api/health."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
        started = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "apiary", "serve", "--port", "0", "--home", str(self.home),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=self.home.parent)
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        if not line.startswith("apiary listening on "):
            raise RuntimeError(f"unexpected first line: {line!r}")
        self.url = line.split()[3]
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            while True:
                try:
                    if (await client.get("/api/health")).status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.005)

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# -- measurements --------------------------------------------------------------------------------

async def cold_start(runs: int, base: Path) -> list[float]:
    times = []
    for i in range(runs):
        home = base / f"cold{i}" / "home"
        home.mkdir(parents=True)
        server = Server(home)
        try:
            times.append(await server.start())
        finally:
            await server.stop()
    return times


class EventTap:
    """One SSE connection; records the arrival time of every event by id."""

    def __init__(self) -> None:
        self.arrivals: dict[int, tuple[float, str]] = {}
        self.changed = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession, url: str) -> None:
        async with session.get(url, params={"last_event_id": "0"}, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            event_id = None
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: ") and event_id is not None:
                    self.arrivals[event_id] = (time.perf_counter(), json.loads(line[6:])["type"])
                    event_id = None
                    self.changed.set()

    async def first_after(self, after: int, type_: str | None = None) -> float:
        while True:
            hits = [t for i, (t, kind) in self.arrivals.items() if i > after and (type_ is None or kind == type_)]
            if hits:
                return min(hits)
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def chat_latency(chats: int, base: Path) -> dict[str, Any]:
    home = base / "chat" / "home"
    home.mkdir(parents=True)
    server = Server(home)
    await server.start()
    try:
        async with aiohttp.ClientSession(server.url) as http:
            async with http.post("/api/sessions", json={}) as resp:
                sid = (await resp.json())["session_id"]
            tap = EventTap()
            reader = asyncio.create_task(tap.run(http, f"/api/sessions/{sid}/events"))
            await tap.first_after(0, "client_input_requested")
            samples: dict[str, list[float]] = {"post": [], "first_event": [], "first_delta": [],
                                               "llm_turn_complete": [], "client_input_requested": []}
            for n in range(chats):
                started = time.perf_counter()
                async with http.post(f"/api/sessions/{sid}/chat", json={"message": f"benchmark message {n}"}) as resp:
                    after = (await resp.json())["after_seq"]
                samples["post"].append(time.perf_counter() - started)
                samples["first_event"].append(await tap.first_after(after - 1) - started)
                samples["first_delta"].append(await tap.first_after(after, "client_output_delta") - started)
                samples["llm_turn_complete"].append(await tap.first_after(after, "llm_turn_complete") - started)
                samples["client_input_requested"].append(
                    await tap.first_after(after, "client_input_requested") - started)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        return {name: {"p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000,
                       "max_ms": max(v) * 1000, "n": len(v)} for name, v in samples.items()}
    finally:
        await server.stop()


async def _wait_parked(http: aiohttp.ClientSession, sid: str) -> None:
    while True:
        async with http.get(f"/api/sessions/{sid}/events/history") as resp:
            events = (await resp.json())["events"]
        if any(e["type"] == "client_input_requested" for e in events):
            return
        await asyncio.sleep(0.05)


async def idle_memory(levels: list[int], base: Path) -> list[dict[str, Any]]:
    home = base / "memory" / "home"
    home.mkdir(parents=True)
    server = Server(home)
    await server.start()
    rows = []
    try:
        async with aiohttp.ClientSession(server.url) as http:
            created: list[str] = []
            for level in levels:
                while len(created) < level:
                    batch = min(50, level - len(created))

                    async def one() -> str:
                        async with http.post("/api/sessions", json={}) as resp:
                            return (await resp.json())["session_id"]

                    sids = await asyncio.gather(*(one() for _ in range(batch)))
                    await asyncio.gather(*(_wait_parked(http, s) for s in sids))
                    created += sids
                await asyncio.sleep(1.0)   # let the allocator settle before reading RSS
                async with http.get("/api/health") as resp:
                    live = (await resp.json())["sessions"]
                rows.append({"sessions": level, "live": live, "rss_mib": server.rss_kib() / 1024})
    finally:
        await server.stop()
    base_rss = rows[0]["rss_mib"]
    for row in rows:
        row["kib_per_session"] = (row["rss_mib"] - base_rss) * 1024 / row["sessions"] if row["sessions"] else None
    return rows


def machine() -> dict[str, Any]:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return {"nproc": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "aiohttp": aiohttp.__version__,
            "platform": platform.platform(), "loadavg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()]}


async def main(quick: bool) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="apiary-bench-") as tmp:
        base = Path(tmp)
        cold = await cold_start(3 if quick else 7, base)
        chat = await chat_latency(30 if quick else 100, base)
        memory = await idle_memory([0, 100] if quick else [0, 100, 1000], base)
    return {"machine": {**machine(), "loadavg_before": load_before}, "quick": quick,
            "cold_start": {"runs": len(cold), "median_ms": statistics.median(cold) * 1000,
                           "all_ms": [t * 1000 for t in cold]},
            "chat": chat, "idle_memory": memory}


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"machine: {m['nproc']} cpu, {m['memory_gib']} GiB, Python {m['python']}, SQLite {m['sqlite']}, "
          f"aiohttp {m['aiohttp']}; load average before/after {m['loadavg_before'][0]}/{m['loadavg_1m_5m_15m'][0]}")
    cold = result["cold_start"]
    print(f"\ncold start to first 200 on /api/health: median {cold['median_ms']:.0f} ms over {cold['runs']} runs "
          f"({', '.join(f'{t:.0f}' for t in cold['all_ms'])} ms)")
    print(f"\n{'chat -> (n=' + str(result['chat']['post']['n']) + ')':<34}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    labels = {"post": "POST /chat answered", "first_event": "first SSE event (echo)",
              "first_delta": "first client_output_delta", "llm_turn_complete": "llm_turn_complete",
              "client_input_requested": "client_input_requested"}
    for key, label in labels.items():
        row = result["chat"][key]
        print(f"{label:<34}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}{row['max_ms']:>10.1f}")
    print(f"\n{'idle sessions':<16}{'live':>8}{'RSS MiB':>10}{'KiB/session':>14}")
    for row in result["idle_memory"]:
        per = f"{row['kib_per_session']:.0f}" if row["kib_per_session"] is not None else "-"
        print(f"{row['sessions']:<16}{row['live']:>8}{row['rss_mib']:>10.1f}{per:>14}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, at most 100 idle sessions")
    args = parser.parse_args()
    outcome = asyncio.run(main(args.quick))
    print_table(outcome)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
