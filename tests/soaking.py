"""The soak: chats, colony triggers, stops, pauses, session churn and short event-stream visits against one
``apiary serve`` process, sampling what it holds. Used by ``scripts/soak.py`` (30 minutes by default) and
``tests/e2e/test_soak_short.py`` (about 30 s).

Samples, between two steps of the workload (so no request of ours is in flight):

- ``rss_bytes`` from ``/proc/<pid>/status`` (VmRSS) and ``open_fds`` from ``/proc/<pid>/fd``;
- ``asyncio_tasks`` and ``loop_lag_ms_max`` from ``GET /api/debug/runtime`` when the server has that
  route (a proposed debug route); without it those two are left out of the report. With its
  ``loop_lag_histogram`` (every 100 ms wake-up of the lag monitor, by lateness) the report also gives the
  lag's p50 / p99 between the baseline and the last sample (as bucket bounds: "at most").

The baseline is the first sample after a warm-up (imports, caches and SQLite pages settle in the first
requests); growth is measured from there. Everything is counted, nothing is timed.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serve_proc import ServeProc, proc_open_fds, proc_rss_bytes

COLONY = "soak"
ENV = {"APIARY_COLONIES__CANCEL_GRACE_S": "2", "APIARY_COLONIES__HEARTBEAT_S": "5"}
MESSAGES = ["hello queen, a short one", "demo:tool list_directory {}",
            'demo:tool write_file {"path": "soak.txt", "content": "soak"}', "demo:delay 5\ntell me about bees slowly",
            "demo:tool read_file {\"path\": \"soak.txt\"}"]


@dataclass
class Sample:
    at_s: float
    step: int
    rss_bytes: int
    open_fds: int
    asyncio_tasks: int | None = None
    loop_lag_ms_max: float | None = None
    lag_counts: list[int] | None = field(default=None, repr=False)


@dataclass
class SoakReport:
    seconds: float
    steps: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    debug_route: bool = False
    samples: list[Sample] = field(default_factory=list)
    baseline_index: int = 0
    lag_bounds_ms: list[float] = field(default_factory=list)

    def baseline(self) -> Sample:
        return self.samples[self.baseline_index]

    def last(self) -> Sample:
        return self.samples[-1]

    def summary(self) -> dict[str, Any]:
        base, last = self.baseline(), self.last()
        after = self.samples[self.baseline_index:]
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 1), "steps": self.steps, "requests": sum(self.requests.values()),
            "requests_by_kind": dict(self.requests), "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors[:20], "samples": len(self.samples), "debug_route": self.debug_route,
            "rss_mib": {"baseline": mib(base.rss_bytes), "last": mib(last.rss_bytes),
                        "max": mib(max(s.rss_bytes for s in after)), "growth": mib(last.rss_bytes - base.rss_bytes)},
            "open_fds": {"baseline": base.open_fds, "last": last.open_fds, "max": max(s.open_fds for s in after)},
        }
        if self.debug_route:
            tasks = [s.asyncio_tasks for s in after if s.asyncio_tasks is not None]
            lags = [s.loop_lag_ms_max for s in after if s.loop_lag_ms_max is not None]
            if tasks:
                out["asyncio_tasks"] = {"baseline": tasks[0], "last": tasks[-1], "max": max(tasks)}
            if lags:
                out["loop_lag_ms_max"] = {"median": round(statistics.median(lags), 1), "max": round(max(lags), 1)}
            if base.lag_counts and last.lag_counts and self.lag_bounds_ms:
                counts = [b - a for a, b in zip(base.lag_counts, last.lag_counts, strict=True)]
                bounds = self.lag_bounds_ms
                out["loop_lag_ms"] = {"wakeups": sum(counts), "p50_at_most": percentile(bounds, counts, 0.5),
                                      "p99_at_most": percentile(bounds, counts, 0.99),
                                      "over_100": sum(c for b, c in zip([*bounds, float("inf")], counts, strict=True)
                                                      if b > 100)}
        return out


def percentile(bounds: list[float], counts: list[int], q: float) -> float | None:
    """The bound of the bucket holding the q-quantile (None past the last bound, or without counts)."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, count in zip([*bounds, None], counts, strict=True):
        seen += count
        if seen >= q * total:
            return bound
    return None


def mib(n: int) -> float:
    return round(n / 1024 / 1024, 1)


class Soak:
    def __init__(self, base: Path, *, seconds: float, seed: int = 1, sample_every_s: float = 5.0,
                 warmup_s: float | None = None, log: Callable[[str], None] = lambda _m: None) -> None:
        self.proc = ServeProc(home=base / "home", logs=base / "logs", env=dict(ENV))
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.sample_every_s = sample_every_s
        self.warmup_s = warmup_s if warmup_s is not None else min(60.0, max(5.0, seconds * 0.2))
        self.log = log
        self.report = SoakReport(seconds=seconds)
        self.client: httpx.Client | None = None
        self.queens: list[str] = []
        self.colony_session = ""

    def call(self, kind: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        assert self.client is not None
        self.report.requests[kind] += 1
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.report.errors.append(f"{kind}: {type(exc).__name__} {exc}")
            return None
        self.report.statuses[resp.status_code] += 1
        if resp.status_code >= 500 and resp.status_code != 503:
            self.report.errors.append(f"{kind}: {method} {path} -> {resp.status_code} {resp.text[:200]}")
        return resp

    # -- sampling --------------------------------------------------------------------------------

    def sample(self, at_s: float, step: int) -> Sample:
        s = Sample(at_s=round(at_s, 1), step=step, rss_bytes=proc_rss_bytes(self.proc.pid),
                   open_fds=proc_open_fds(self.proc.pid))
        if self.report.debug_route:
            resp = self.call("debug", "GET", "/api/debug/runtime")
            if resp is not None and resp.status_code == 200:
                body = resp.json()
                s.asyncio_tasks = body.get("asyncio_tasks")
                s.loop_lag_ms_max = body.get("loop_lag_ms_max")
                histogram = body.get("loop_lag_histogram") or {}
                if histogram.get("counts"):
                    s.lag_counts = list(histogram["counts"])
                    self.report.lag_bounds_ms = list(histogram["bounds_ms"])
        self.report.samples.append(s)
        return s

    # -- the workload ----------------------------------------------------------------------------

    def setup(self) -> None:
        self.proc.start()
        self.client = httpx.Client(base_url=self.proc.url, timeout=httpx.Timeout(20.0))
        probe = self.client.get("/api/debug/runtime")
        self.report.debug_route = probe.status_code == 200
        self.queens = [self.client.post("/api/sessions", json={}).json()["session_id"] for _ in range(3)]
        spawner = self.client.post("/api/sessions", json={}).json()["session_id"]
        tasks = [{"goal": f"demo:delay 5\nsoak item {i}", "max_retries": 1000} for i in range(200)]
        spawn = self.client.post(f"/api/sessions/{spawner}/colony-spawn", json={"colony_name": COLONY, "tasks": tasks})
        assert spawn.status_code == 200, spawn.text
        opened = self.client.post("/api/sessions", json={"agent_path": spawn.json()["colony_path"]})
        assert opened.status_code == 201, opened.text
        self.colony_session = opened.json()["session_id"]

    def step(self, n: int) -> None:
        cid = self.colony_session
        queen = self.queens[n % len(self.queens)]
        self.call("chat", "POST", f"/api/sessions/{queen}/chat", json={"message": self.rng.choice(MESSAGES)})
        self.call("trigger", "POST", f"/api/sessions/{cid}/trigger", json={})
        if n % 3 == 2:
            self.call("stop", "POST", f"/api/sessions/{cid}/stop", json={"execution_id": cid})
        if n % 7 == 6:
            self.call("pause", "POST", f"/api/sessions/{cid}/pause")
        if n % 4 == 3:
            resp = self.call("session_create", "POST", "/api/sessions", json={})
            if resp is not None and resp.status_code == 201:
                sid = resp.json()["session_id"]
                self.call("chat", "POST", f"/api/sessions/{sid}/chat", json={"message": "hello and goodbye"})
                self.call("session_end", "DELETE", f"/api/sessions/{sid}")
        if n % 5 == 4:
            self.visit_stream(f"/api/sessions/{queen}/events")
        if n % 11 == 10:
            self.visit_stream(f"/api/colonies/{COLONY}/progress/stream")
        self.call("read", "GET", f"/api/sessions/{cid}/goal-progress")
        self.call("read", "GET", f"/api/sessions/{queen}/events/history", params={"limit": "50"})
        self.call("read", "GET", f"/api/colonies/{COLONY}/progress/snapshot", params={"limit": "20"})
        # the cancel pauses the queen of the colony session; give the workers something new to do
        if n % 50 == 49:
            self.call("queen_context", "POST", f"/api/sessions/{cid}/queen-context", json={"message": "carry on"})
        time.sleep(self.rng.uniform(0.02, 0.15))

    def visit_stream(self, path: str) -> None:
        assert self.client is not None
        self.report.requests["stream"] += 1
        try:
            with self.client.stream("GET", path, headers={"Last-Event-ID": "0"}, timeout=5.0) as resp:
                self.report.statuses[resp.status_code] += 1
                next(resp.iter_bytes(), b"")
        except httpx.HTTPError as exc:
            self.report.errors.append(f"stream {path}: {type(exc).__name__}")

    def run(self) -> SoakReport:
        began = time.monotonic()
        try:
            self.setup()
            self.sample(0.0, 0)
            next_sample = began + self.sample_every_s
            baseline_taken = False
            for n in itertools.count():
                now = time.monotonic()
                if now - began >= self.seconds:
                    break
                self.step(n)
                self.report.steps = n + 1
                now = time.monotonic()
                if not baseline_taken and now - began >= self.warmup_s:
                    self.sample(now - began, n + 1)
                    self.report.baseline_index = len(self.report.samples) - 1
                    baseline_taken = True
                    next_sample = now + self.sample_every_s
                elif now >= next_sample:
                    s = self.sample(now - began, n + 1)
                    next_sample = now + self.sample_every_s
                    self.log(json.dumps({k: v for k, v in s.__dict__.items() if k != "lag_counts"}))
            time.sleep(1.0)                      # let the last executions settle before the final sample
            self.sample(time.monotonic() - began, self.report.steps)
            code = self.proc.stop()
            if code != 0:
                self.report.errors.append(f"SIGTERM exit code {code}")
        finally:
            if self.client is not None:
                self.client.close()
            self.proc.cleanup()
        self.report.seconds = time.monotonic() - began
        return self.report
