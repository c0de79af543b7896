"""Benchmarks 1 and 2: harness overhead per agent step, and checkpoint growth, against LangGraph.

What: one agent runs N turns on a scripted model that does no work. A turn is what the agent does
with one new user message: a model call that asks for one tool call (``echo {"i": n}``), the tool's
result, and a model call that answers with text. Durability is on in both: apiary's SQLite stores
(``apiary.db``) and, for the full worker, its checkpoint files; LangGraph's ``SqliteSaver`` (or
``AsyncSqliteSaver``) on a file, ``PRAGMA synchronous=NORMAL`` like apiary. A *step* is one turn,
timed from one turn's first model call to the next one's, so it is everything the harness does
between two turns' model work: storing messages, events, recordings, cursor and checkpoint. The
first turn (imports, schema, first-use caches) is left out on both sides. Texts differ from turn to
turn on both sides (apiary's stall detector would stop a worker repeating itself), tool arguments
too (its doom-loop detector), and compaction is out of reach (a 10^9-token context), since
LangGraph compacts nothing.

Why: the harness is pure overhead between model calls; with fast models and tools it is what a user
waits for, and what a machine full of agents spends its CPU on. The same run measures how many
bytes each turn adds to storage at turns 10, 100 and 500 (averaged over the ten turns before:
apiary rewrites a worker's checkpoint index every tenth checkpoint): a harness that re-stores the whole
conversation each step grows per-turn bytes (and time) with the length of the conversation.

Sides (each run in a fresh process, alternating, so they share the machine's noise):
- ``apiary-worker``: a real colony worker execution (ColonyRuntime, Execution, WorkerHooks): SQLite
  stores plus a checkpoint file per turn (state.json and index.json with every tenth). The tool is
  injected as the worker's only tool.

Durability, side by side: apiary's database writes of a step (messages, recordings, cursor) are
committed before the step goes on, and its checkpoint file is written while the next step runs (at
most one in flight). LangGraph runs with its default ``durability="async"``: each step's checkpoint
is persisted while the next step runs. Neither side fsyncs (``synchronous=NORMAL`` in WAL mode).
- ``apiary-loop``: ``AgentLoop`` (worker role) on ``SqliteStores`` with plain hooks: no checkpoint
  files, the SQLite durability alone.
- ``langgraph-plain`` / ``langgraph-chatmodel`` / ``langgraph-async``: see ``langgraph_agent.py``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dir_bytes, emit, quick_flag, summary
from langgraph_agent import turn_texts

LG_VARIANTS = ("langgraph-plain", "langgraph-chatmodel", "langgraph-async")
APIARY_VARIANTS = ("apiary-worker", "apiary-loop")


# -- the apiary side -----------------------------------------------------------------------------


class EchoTool:
    """The trivial tool: answers at once with its arguments."""

    is_idempotent = True
    is_concurrency_safe = True

    def __init__(self) -> None:
        from apiary.core.messages import ToolSpec

        self.spec = ToolSpec("echo", "Echo the arguments.",
                             {"type": "object", "properties": {"i": {"type": "integer"}}, "required": ["i"]})

    async def call(self, args: Mapping[str, Any], ctx: Any) -> Any:
        from apiary.tools.base import ToolOutput

        return ToolOutput(f"echo {dict(args)}")


class ScriptModel:
    """The scripted model: no work, no latency. Call A of turn n asks for ``echo {"i": n}``; the call
    after a tool result answers with text; after ``turns`` turns it calls ``set_output``.

    At the start of each turn it notes the time; after the turns in ``measure`` it first measures the
    bytes stored, and that time is taken out of the step it falls in (as on the LangGraph side).
    """

    supports_images = False

    def __init__(self, turns: int, measure: set[int], measurer: Any = None, *, latency_s: float = 0.0,
                 max_s: float | None = None) -> None:
        self.deadline = None if max_s is None else time.perf_counter() + max_s
        self.model = "scripted"
        self.turns = turns
        self.measure = measure
        self.measurer = measurer
        self.latency_s = latency_s
        self.started = 0
        self.starts_ns: list[int] = []
        self.on_start: Any = None   # called at each turn start, after the time is noted (bench_scale)
        self.excluded_ns: dict[int, int] = {}
        self.sizes: dict[str, Any] = {}

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        from apiary.llm.base import Finish, TextDelta, ToolCallDelta

        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        last = request.messages[-1] if request.messages else {}
        if last.get("role") == "tool":
            done = self.started   # turns begun so far; this call closes turn ``done``
            yield TextDelta(turn_texts(done - 1)[1] if done <= self.turns else "finished")
            yield Finish(stop_reason="end_turn", input_tokens=100, output_tokens=10, model=self.model)
            return
        done = self.started
        if done in self.measure and self.measurer is not None:
            m0 = time.perf_counter_ns()
            self.sizes[str(done)] = self.measurer()
            self.excluded_ns[done] = time.perf_counter_ns() - m0
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.turns = min(self.turns, done)   # out of time: finish now, with the turns reached
        self.starts_ns.append(time.perf_counter_ns())
        if self.on_start is not None:
            self.on_start()
        self.started += 1
        if done >= self.turns:
            yield ToolCallDelta(f"call_{done}_0", "set_output", {"key": "result", "value": "done"})
        else:
            yield TextDelta(turn_texts(done)[0])
            yield ToolCallDelta(f"call_{done}_0", "echo", {"i": done})
        yield Finish(stop_reason="tool_use", input_tokens=100, output_tokens=10, model=self.model)

    async def acomplete(self, request: Any) -> Any:
        from apiary.llm.base import ModelResponse

        return ModelResponse(content="summary", model=self.model)

    async def aclose(self) -> None:
        return None


def apiary_db_bytes(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        parts = {}
        for name, sql in (("events", "SELECT SUM(LENGTH(body)) FROM events"),
                          ("messages", "SELECT SUM(LENGTH(body)) FROM conv_messages"),
                          ("partials", "SELECT SUM(LENGTH(body)) FROM conv_partials"),
                          ("state", "SELECT SUM(COALESCE(LENGTH(meta), 0) + COALESCE(LENGTH(cursor), 0))"
                                    " FROM conv_state"),
                          ("recordings", "SELECT SUM(LENGTH(body)) FROM recordings")):
            parts[name] = int(conn.execute(sql).fetchone()[0] or 0)
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        used = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return {"parts": parts, "logical": sum(parts.values()), "physical": int(page) * int(used)}


async def run_apiary(variant: str, turns: int, measure_at: list[int], home: Path,
                     max_s: float | None = None) -> dict[str, Any]:
    from apiary.agent.context import BaseHooks, RunContext
    from apiary.agent.emitter import Emitter
    from apiary.agent.loop import AgentLoop
    from apiary.agent.state import LoopConfig
    from apiary.bus.bus import EventBus
    from apiary.core.clock import SystemClock
    from apiary.core.ids import RandomIds
    from apiary.storage.sqlite.stores import SqliteStores
    from apiary.tools.base import ToolContext, Toolset

    home.mkdir(parents=True, exist_ok=True)
    db = home / "apiary.db"
    measure = set(measure_at)
    files_dir: list[Path] = []

    def measurer() -> dict[str, Any]:
        sizes = apiary_db_bytes(db)
        files = dir_bytes(files_dir[0]) if files_dir else 0
        return {"db_logical": sizes["logical"], "db_parts": sizes["parts"], "files": files,
                "logical": sizes["logical"] + files, "physical": sizes["physical"] + files}

    model = ScriptModel(turns, measure, measurer, max_s=max_s)
    stores = await SqliteStores.open(db)
    bus = EventBus(stores.events, SystemClock())
    toolset = Toolset([EchoTool()])
    t0 = time.perf_counter_ns()
    if variant == "apiary-loop":
        emitter = Emitter(bus, "bench", stream_id="default", node_id="worker", execution_id="bench")
        ctx = RunContext(role="worker", owner="worker:bench", run_id="run1", llm=model,
                         config=LoopConfig(max_iterations=turns + 10, max_context_tokens=10**9),
                         emitter=emitter, conversations=stores.conversations, recordings=stores.recordings,
                         clock=SystemClock(), ids=RandomIds(), hooks=BaseHooks("You are a worker.", toolset),
                         tool_context=ToolContext(workspace=home, session_id="bench", node_id="worker"))
        outcome = await AgentLoop(ctx, initial_messages=["Goal: run the benchmark."]).run()
        status = outcome.status
    else:
        status = await _run_worker(home, stores, bus, model, toolset, turns, files_dir)
    total = time.perf_counter_ns() - t0
    await stores.aclose()
    db_files = sum(p.stat().st_size for p in home.glob("apiary.db*"))
    return {"starts_ns": model.starts_ns, "excluded_ns": model.excluded_ns, "sizes": model.sizes, "total_ns": total,
            "status": status, "db_file_bytes": db_files + (dir_bytes(files_dir[0]) if files_dir else 0),
            "variant": variant}


class _Host:
    id = "bench_session"

    def tell_queen(self, text: str) -> None:
        return None

    def inject_trigger(self, text: str) -> None:
        return None

    async def workers_idle(self) -> None:
        return None


async def _run_worker(home: Path, stores: Any, bus: Any, model: ScriptModel, toolset: Any, turns: int,
                      files_dir: list[Path]) -> str:
    from apiary.colonies.runtime import ColonyRuntime
    from apiary.colonies.spec import ColonySpec
    from apiary.core.clock import SystemClock
    from apiary.core.config import Settings
    from apiary.core.ids import RandomIds
    from apiary.core.layout import Layout

    layout = Layout(home)
    colony = layout.colony_dir("bench")
    colony.mkdir(parents=True, exist_ok=True)
    (colony / "worker.json").write_text(json.dumps({
        "system_prompt": "You are a worker.", "goal": {"description": "run the benchmark", "success_criteria": []},
        "tools": [], "loop_config": {"max_iterations": turns + 10, "max_context_tokens": 10**9}}))
    spec = ColonySpec.load(colony)
    assert spec is not None
    runtime = ColonyRuntime(host=_Host(), spec=spec, settings=Settings(home=home), layout=layout, stores=stores,
                            bus=bus, clock=SystemClock(), ids=RandomIds(), worker_llm=model)
    runtime.worker_tools = lambda: toolset  # type: ignore[method-assign]  # the trivial tool is its only tool
    await runtime.load()
    execution_id = await runtime.trigger("default", {}, {})
    execution = runtime.streams["default"].active[execution_id]
    files_dir.append(runtime.worker_session_dir(execution_id))
    assert execution.task is not None
    await execution.task
    status = execution.status
    await runtime.aclose()
    return status


# -- running and summarising ---------------------------------------------------------------------


def steps_ms(raw: dict[str, Any]) -> list[float]:
    """Per-turn durations (ms), measurement time taken out, the first (warm-up) turn left out."""
    starts = raw["starts_ns"]
    excluded = {int(k): v for k, v in raw["excluded_ns"].items()}
    steps = [(starts[i + 1] - starts[i] - excluded.get(i + 1, 0)) / 1e6 for i in range(len(starts) - 1)]
    return steps[1:]


WINDOW = 10   # bytes per turn at turn T: (stored after T - stored after T - WINDOW) / WINDOW


def measure_points(points: list[int]) -> list[int]:
    return sorted({p for t in points for p in (t - WINDOW, t)})


def run_side(variant: str, turns: int, points: list[int], workdir: Path, curve: list[int] = (),
             max_s: float = 300) -> dict[str, Any]:
    """One side in a fresh process; its raw JSON result. Bytes are measured around ``points`` and at ``curve``."""
    measure = sorted(set(measure_points(points)) | set(curve))
    if variant.startswith("langgraph"):
        import langgraph_env

        cfg = {"turns": turns, "measure": measure, "variant": variant.split("-", 1)[1],
               "db": str(workdir / f"{variant}.sqlite"), "synchronous": "NORMAL", "max_s": max_s}
        cmd = [str(langgraph_env.ensure(lambda m: print(m, file=sys.stderr))),
               str(Path(__file__).with_name("langgraph_agent.py")), json.dumps(cfg)]
    else:
        cfg = {"turns": turns, "measure": measure, "variant": variant, "home": str(workdir / variant), "max_s": max_s}
        cmd = [sys.executable, __file__, "--side", json.dumps(cfg)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=max_s + 120)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    for suffix in ("", "-wal", "-shm"):
        Path(str(workdir / f"{variant}.sqlite") + suffix).unlink(missing_ok=True)
    shutil.rmtree(workdir / variant, ignore_errors=True)
    return raw


def per_turn_bytes(sizes: dict[str, Any], points: list[int]) -> dict[str, Any]:
    out = {}
    for t in points:
        a, b = sizes.get(str(t - WINDOW)), sizes.get(str(t))
        if a is None or b is None:
            continue
        out[str(t)] = {"logical": round((b["logical"] - a["logical"]) / WINDOW),
                       "physical": round((b["physical"] - a["physical"]) / WINDOW),
                       "total_logical": b["logical"], "total_physical": b["physical"]}
    return out


def window_p50(steps: list[float], start_turn: int, end_turn: int) -> float | None:
    """p50 of the steps of turns start..end (1-based; steps[0] is turn 2)."""
    from _common import pct

    chunk = steps[max(0, start_turn - 2):max(0, end_turn - 1)]
    return round(pct(chunk, 50), 4) if chunk else None


def overhead_part(quick: bool, workdir: Path) -> dict[str, Any]:
    """Benchmark 1: every side, alternating, ``rounds`` times; steps pooled per side."""
    import langgraph_env

    turns = 60 if quick else 100
    rounds = 1 if quick else 2
    lg_python = langgraph_env.ensure(lambda m: print(m, file=sys.stderr))
    lg_versions = json.loads(subprocess.run(
        [str(lg_python), "-c", "import json,langgraph_agent as a; print(json.dumps(a.versions()))"],
        capture_output=True, text=True, check=True, cwd=str(Path(__file__).parent)).stdout)
    order = ["langgraph-plain", "apiary-worker", "langgraph-chatmodel", "apiary-loop"]
    if not quick:
        order.append("langgraph-async")
    pooled: dict[str, list[float]] = {v: [] for v in order}
    totals: dict[str, list[float]] = {v: [] for v in order}
    for r in range(rounds):
        for variant in (order if r % 2 == 0 else list(reversed(order))):
            raw = run_side(variant, turns, [], workdir)
            pooled[variant] += steps_ms(raw)
            totals[variant].append(round(raw["total_ns"] / 1e9, 3))
    overhead = {v: {**summary(s), "turns": turns, "rounds": rounds, "wall_s": totals[v]} for v, s in pooled.items()}
    ratios = {}
    for a in APIARY_VARIANTS:
        for lg in LG_VARIANTS:
            if lg in overhead:
                ratios[f"{a} / {lg}"] = {"p50": round(overhead[a]["p50"] / overhead[lg]["p50"], 4),
                                         "p99": round(overhead[a]["p99"] / overhead[lg]["p99"], 4)}
    return {"overhead": overhead, "ratios": ratios, "langgraph_versions": lg_versions}


def growth_part(quick: bool, workdir: Path) -> dict[str, Any]:
    """Benchmark 2: one long run per side, bytes measured around the points (and for the plot)."""
    growth_turns = 60 if quick else 500
    growth_points = [10, 50] if quick else [10, 100, 500]
    curve_points = list(range(0, growth_turns + 1, 10 if quick else 25))
    growth: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    sides = ("apiary-worker", "langgraph-plain") if quick else ("apiary-worker", "apiary-loop", "langgraph-plain")
    for variant in sides:
        # LangGraph's time per turn grows with the conversation: bounded at 150 s, the turns reached are reported.
        raw = run_side(variant, growth_turns, growth_points, workdir, curve_points, max_s=150)
        steps = steps_ms(raw)
        curves[variant] = [round(s, 4) for s in steps]
        growth[variant] = {
            "turns": growth_turns, "turns_reached": len(raw["starts_ns"]) - 1,
            "per_turn_bytes": per_turn_bytes(raw["sizes"], growth_points),
            "files_on_disk_bytes": raw["db_file_bytes"], "wall_s": round(raw["total_ns"] / 1e9, 3),
            "step_ms": summary(steps),
            "step_p50_by_window": {f"{lo}-{hi}": window_p50(steps, lo, hi) for lo, hi in
                                   ((2, 10), (91, 100), (491, 500)) if hi <= growth_turns},
            "sizes": raw["sizes"],
            "stored_curve": [(t, raw["sizes"][str(t)]["logical"]) for t in curve_points if str(t) in raw["sizes"]]}
    return {"growth": growth, "curves": curves}


def main() -> None:
    quick = quick_flag()
    part = sys.argv[sys.argv.index("--part") + 1] if "--part" in sys.argv else "all"
    workdir = Path(tempfile.mkdtemp(prefix="apiary-bench-harness-"))
    try:
        result: dict[str, Any] = {"quick": quick}
        if part in ("overhead", "all"):
            result.update(overhead_part(quick, workdir))
        if part in ("growth", "all"):
            result.update(growth_part(quick, workdir))
        emit(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--side":
        side = json.loads(sys.argv[2])
        result = asyncio.run(run_apiary(side["variant"], side["turns"], side["measure"], Path(side["home"]),
                                        max_s=side.get("max_s")))
        print(json.dumps(result))
    else:
        main()
