"""Run every benchmark, profile the ones that miss their goal, write the report.

    .venv/bin/python benchmarks/run.py            # full: under 10 minutes
    .venv/bin/python benchmarks/run.py --quick    # fewer samples: about a minute (no profiles)
    .venv/bin/python benchmarks/run.py --report   # only re-render the report from results/latest.json

Writes ``benchmarks/results/latest.json`` (raw results, machine, goals) and ``docs/benchmarks.md``
(tables, goals, hot spots; PNG plots in ``docs/benchmarks/`` when matplotlib is there). Each
benchmark runs in its own process, one after another (never two at once: they would measure each
other). LangGraph gets its own venv (``benchmarks/.venv-langgraph``, see langgraph_env.py);
pyinstrument and matplotlib are installed into the running venv when missing, and are optional.
Benchmarks are never tests: nothing here asserts on time.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import ROOT, machine  # noqa: E402

RESULTS = HERE / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "benchmarks"
ANALYSIS = HERE / "analysis.md"

# name, module, timeout full, timeout quick (seconds)
BENCHES = (
    ("harness", "bench_harness.py --part overhead", 150, 40),
    ("growth", "bench_harness.py --part growth", 240, 30),
    ("http", "bench_http.py", 180, 40),
    ("scale", "bench_scale.py", 180, 40),
    ("queue", "bench_queue.py", 90, 30),
    ("cancel", "bench_cancel.py", 120, 40),
    ("coldstart", "bench_coldstart.py", 60, 30),
    ("queue_scale", "bench_queue_scale.py", 120, 45),
)
BUDGET_S = 570   # the whole full run stays under 10 minutes: later steps get what is left


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_optional(module: str, package: str) -> bool:
    if importlib.util.find_spec(module) is not None:
        return True
    log(f"installing {package} into {sys.prefix} (optional)")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", package],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    importlib.invalidate_caches()
    return done.returncode == 0 and importlib.util.find_spec(module) is not None


def run_module(module: str, args: list[str], timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    script, *own = module.split()
    # Its own process group, so a timeout also ends what it started (servers, LangGraph, claimers).
    proc = subprocess.Popen([sys.executable, str(HERE / script), *own, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(ROOT), start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "wall_s": round(time.perf_counter() - t0, 1)}
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    wall = round(time.perf_counter() - t0, 1)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT "):])
            result["wall_s_total"] = wall
            result["loadavg_1m_before"] = round(load0, 2)
            return result
    return {"error": f"exit {out.returncode}: {out.stderr[-2000:]}", "wall_s": wall}


# -- goals ---------------------------------------------------------------------------------------


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure against its goal: (benchmark, figure, value, goal, met, profile target)."""
    out: list[dict[str, Any]] = []

    def add(bench: str, figure: str, value: Any, goal: str, met: bool | None, target: str | None) -> None:
        out.append({"benchmark": bench, "figure": figure, "value": value, "goal": goal, "met": met,
                    "profile": target})

    h = {**r.get("harness", {}), **r.get("growth", {})}
    if "ratios" in h:
        for lg in ("langgraph-plain", "langgraph-chatmodel", "langgraph-async"):
            if f"apiary-worker / {lg}" not in h["ratios"]:
                continue   # (quick runs leave the async side out)
            ratio = h["ratios"][f"apiary-worker / {lg}"]["p50"]
            add("1 harness", f"apiary worker / {lg}, p50 per step", f"{ratio:.3f}x", "<= 0.25x", ratio <= 0.25,
                "harness")
    if "growth" in h:
        g = h["growth"]["apiary-worker"]["per_turn_bytes"]
        first, last = min(g, key=int), max(g, key=int)
        ratio = g[last]["logical"] / max(1, g[first]["logical"])
        add("2 growth", f"apiary worker bytes/turn, turn {last} vs turn {first}",
            f"{g[first]['logical']} -> {g[last]['logical']} B ({ratio:.2f}x)", "flat (<= 1.25x)", ratio <= 1.25, None)
    for clients, sc in (r.get("http", {}).get("scenarios") or {}).items():
        f50, t50 = sc["first_event_ms"]["p50"], sc["turn_complete_ms"]["p50"]
        add("3 http", f"{clients} client(s): chat -> first SSE event p50", f"{f50:.2f} ms", "<= 1 ms", f50 <= 1,
            "server")
        add("3 http", f"{clients} client(s): chat -> turn complete p50", f"{t50:.2f} ms", "<= 5 ms", t50 <= 5,
            "server")
    s = r.get("scale", {})
    if "sessions" in s:
        per = s["sessions"]["per_session_mib"]
        add("4 scale", f"RSS per idle live session ({s['sessions']['sessions']} sessions)", f"{per:.4f} MiB",
            "<= 0.1 MB", per <= 0.1 * 1e6 / 2**20, None)
    for lp in s.get("loops", []):
        p99 = lp["step_overhead_ms"]["p99"]
        add("4 scale", f"{lp['loops']} concurrent loops: p99 step overhead", f"{p99:.1f} ms", "<= 5 ms", p99 <= 5,
            "loops")
    q = r.get("queue", {})
    for c in q.get("claims", []):
        add("5 queue", f"claims/s, {c['processes']} process(es)", f"{c['claims_per_s']:.0f}/s", ">= 5,000/s",
            c["claims_per_s"] >= 5000, "queue")
        doubles = c["double_claims_audit"] + c["double_claims_returned"]
        add("5 queue", f"double claims, {c['processes']} process(es)", doubles, "0", doubles == 0, None)
    c = r.get("cancel", {})
    if "stop_to_final_event_ms" in c:
        p99 = c["stop_to_final_event_ms"]["p99"]
        add("6 cancel", "stop -> last event of the execution, p99", f"{p99:.1f} ms", "<= 100 ms", p99 <= 100, "cancel")
        leaks = c["events_after_final"] + c["effects_after_stop_answered"]
        add("6 cancel", "tokens/tool effects after the cancel", leaks, "0", leaks == 0, None)
    cs = r.get("coldstart", {})
    if "health_median_s" in cs:
        med = cs["health_median_s"]
        add("7 cold start", "process start -> first 200 on /api/health, median (bytecode cached)", f"{med:.3f} s",
            "<= 0.5 s", med <= 0.5, "coldstart")
        as_is = (cs.get("modes") or {}).get("as this environment runs it")
        if as_is:
            add("7 cold start", "the same, as this environment runs it (no bytecode cache)",
                f"{as_is['health_median_s']:.3f} s", "<= 0.5 s", as_is["health_median_s"] <= 0.5, "coldstart")
    qs = r.get("queue_scale", {})
    for backend, label in (("postgres", "PostgreSQL"), ("sqlite", "SQLite")):
        runs = [x for x in qs.get("runs", []) if x["backend"] == backend]
        if runs:
            doubles = sum(x["double_claims_audit"] + x["double_claims_returned"] for x in runs)
            procs = "/".join(str(x["processes"]) for x in runs)
            add("8 queue scale-out", f"{label} double claims, {procs} processes", doubles, "0", doubles == 0, None)
    return out


# -- plots ---------------------------------------------------------------------------------------


def plots(r: dict[str, Any]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    PLOTS.mkdir(parents=True, exist_ok=True)
    made = []
    h = {**r.get("harness", {}), **r.get("growth", {})}
    if h.get("curves"):
        fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
        for name, steps in h["curves"].items():
            smooth = [sorted(steps[max(0, i - 4):i + 5])[len(steps[max(0, i - 4):i + 5]) // 2]
                      for i in range(len(steps))]
            ax.plot(range(2, len(steps) + 2), smooth, label=name, linewidth=1.4)
        ax.set_yscale("log")
        ax.set_xlabel("turn")
        ax.set_ylabel("ms per step (running median of 9)")
        ax.set_title("Harness time per step as the conversation grows")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(PLOTS / "step_time.png")
        plt.close(fig)
        made.append("step_time.png")
    if h.get("growth"):
        fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
        for name, g in h["growth"].items():
            pts = g.get("stored_curve") or []
            if pts:
                pts = [p for p in pts if p[1] > 0]
                ax.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], marker="o", markersize=3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("turn")
        ax.set_ylabel("MB stored (logical)")
        ax.set_title("Bytes stored by one agent after N turns")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(PLOTS / "stored_bytes.png")
        plt.close(fig)
        made.append("stored_bytes.png")
    s = r.get("scale", {}).get("sessions")
    if s and s.get("curve_kib"):
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
        ax.plot([p[0] for p in s["curve_kib"]], [p[1] / 1024 for p in s["curve_kib"]], marker="o")
        ax.set_xlabel("idle live sessions")
        ax.set_ylabel("server VmRSS (MiB)")
        ax.set_title("Server memory as sessions are added")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(PLOTS / "rss_sessions.png")
        plt.close(fig)
        made.append("rss_sessions.png")
    return made


# -- the report ----------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(data: dict[str, Any]) -> str:
    r = data["results"]
    m = data["machine"]
    quick = data["quick"]
    out = ["# apiary benchmarks", ""]
    out.append(f"Generated by `{data['command']}` on {data['finished']} in {data['wall_s']:.0f} s"
               + (" — **QUICK run: few samples, for a smoke check only; the figures to quote come from a full run.**"
                  if quick else "."))
    out += ["", "Benchmarks are never tests: nothing asserts on time. Every module in `benchmarks/` says in its "
            "docstring what it measures and why; raw results are in `benchmarks/results/latest.json`.", ""]
    out += ["## Machine", "", _table(["", ""], [
        ["CPU", f"{m.get('cpu_model')} — {m.get('cpus_usable')} usable cores ({m.get('cpus_logical')} logical)"],
        ["memory", f"{m.get('memory_gib')} GiB"], ["OS", m.get("os")],
        ["Python", f"{m.get('implementation')} {m.get('python')}"], ["SQLite", m.get("sqlite")],
        ["aiohttp / aiosqlite", f"{m.get('aiohttp')} / {m.get('aiosqlite')}"],
        ["temp filesystem", m.get("tmp_fs")],
        ["load average at start (1/5/15 min)", " / ".join(str(x) for x in m.get("loadavg_at_start", []))]]), ""]
    out += ["The machine is shared and noisy (other builds and test suites run on the same 2 cores; the 1-minute "
            "load average before each benchmark is in the tables). Absolute times move by 2-5x from run to run; "
            "compare the ratios, which are measured side by side in one run, alternating the sides.", ""]
    lg = (r.get("harness") or {}).get("langgraph_versions") or {}
    if lg:
        out += ["LangGraph, in its own venv `benchmarks/.venv-langgraph` (pinned in `benchmarks/langgraph_env.py`): "
                + ", ".join(f"{k} {v}" for k, v in lg.items()) + ".", ""]
    out += ["## Goals", "", _table(["benchmark", "figure", "value", "goal", "met"], [
        [g["benchmark"], g["figure"], g["value"], g["goal"], "yes" if g["met"] else ("**no**" if g["met"] is False
                                                                                     else "?")]
        for g in data["goals"]]), ""]
    for name, res in r.items():
        if "error" in res:
            out += [f"**{name} failed**: `{res['error'][:500]}`", ""]
    out += _harness_section({**(r.get("harness") or {}), **(r.get("growth") or {})}, data.get("plots", []))
    out += _http_section(r.get("http") or {})
    out += _scale_section(r.get("scale") or {}, data.get("plots", []))
    out += _queue_section(r.get("queue") or {})
    out += _cancel_section(r.get("cancel") or {})
    out += _cold_section(r.get("coldstart") or {})
    out += _queue_scale_section(r.get("queue_scale") or {}, m)
    out += _profile_section(data.get("profiles") or {})
    return "\n".join(out) + "\n"


WINDOWS = ((2, 25), (76, 100), (476, 500))   # turns; 25 steps each, so one noisy moment does not move a median


def _window_p50(h: dict[str, Any], side: str) -> dict[str, float]:
    """p50 step time per window of turns, from the growth run's per-step curve (curve[0] is turn 2)."""
    from _common import pct

    steps = (h.get("curves") or {}).get(side) or []
    out = {}
    for lo, hi in WINDOWS:
        chunk = steps[lo - 2:hi - 1]
        if len(chunk) >= (hi - lo) // 2:
            out[f"{lo}-{hi}"] = round(pct(chunk, 50), 2)
    return out


def _harness_section(h: dict[str, Any], made: list[str]) -> list[str]:
    if "overhead" not in h and "growth" not in h:
        return []
    out = ["## 1. Harness overhead per agent step, against LangGraph", "",
           "One agent, N turns on one thread; each turn: a new user message, a model call asking for one tool "
           "call, the tool's result, a model call answering with text. Scripted model with zero latency on both "
           "sides, durability on (apiary: `SqliteStores`; LangGraph: `SqliteSaver`/`AsyncSqliteSaver`, "
           "`synchronous=NORMAL` like apiary). A step = one turn, from its first model call to the next turn's; the "
           "first turn is left out. `apiary-worker` is a real colony worker execution (a checkpoint file every "
           "turn, written while the next turn runs; state.json and index.json every tenth), "
           "`apiary-loop` the bare `AgentLoop` on SQLite; `langgraph-plain` uses plain function nodes, "
           "`langgraph-chatmodel` a `BaseChatModel` and the prebuilt `ToolNode`, `langgraph-async` the latter on "
           "`AsyncSqliteSaver`/`ainvoke`. Durability: apiary commits a step's database writes before the step "
           "goes on; LangGraph runs with its default `durability=\"async\"` (a step's checkpoint is persisted "
           "while the next step runs); neither fsyncs (WAL, `synchronous=NORMAL`).", ""]
    if "overhead" in h:
        ov = h["overhead"]
        out.append(_table(["side", "turns x rounds", "steps", "p50 ms", "p90 ms", "p99 ms", "mean ms"], [
            [k, f"{v['turns']} x {v['rounds']}", v["n"], v["p50"], v["p90"], v["p99"], v["mean"]]
            for k, v in ov.items()]))
        out += ["", "Ratios (apiary / LangGraph, same run):", "", _table(["pair", "p50 ratio", "p99 ratio"], [
            [k, v["p50"], v["p99"]] for k, v in h["ratios"].items()]), ""]
        a, lg = _window_p50(h, "apiary-worker"), _window_p50(h, "langgraph-plain")
        if a and lg:
            pairs = [f"turns {w}: {a[w] / lg[w]:.2f}x" for w in a if a.get(w) and lg.get(w)]
            out += ["The ratio depends on the length of the conversation, because LangGraph's time per step grows "
                    "with it (section 2). From the long run of section 2, apiary worker / langgraph-plain p50: "
                    + ", ".join(pairs) + ". The goal rows above use the 100-turn runs.", ""]
    if "growth" in h:
        out += ["## 2. Checkpoint growth", "",
                "Bytes stored per turn (average over the ten turns up to turn T), in the same workload run for "
                "longer. *Logical* = the bytes of the stored rows (SQL `LENGTH` of every body/blob) plus the worker "
                "session's files (checkpoints, state.json, index.json, runs.jsonl); *physical* = used SQLite pages "
                "plus those files. apiary: apiary.db + the worker session folder; LangGraph: its sqlite file.", ""]
        rows = []
        for name, g in h["growth"].items():
            for t, b in g["per_turn_bytes"].items():
                rows.append([name, t, b["logical"], b["physical"], f"{b['total_logical'] / 1e6:.2f}"])
        out += [_table(["side", "turn", "bytes/turn logical", "bytes/turn physical", "stored total MB"], rows), ""]
        windows = [f"{lo}-{hi}" for lo, hi in WINDOWS]
        rows = [[name, g.get("turns_reached", g["turns"]), g["wall_s"],
                 *[_window_p50(h, name).get(w, "-") for w in windows],
                 f"{g['files_on_disk_bytes'] / 1e6:.1f}"] for name, g in h["growth"].items()]
        out += ["Time per step as the conversation grows (p50 ms over windows of 25 turns):", "",
                _table(["side", "turns", "wall s", *[f"p50 turns {w}" for w in windows], "files MB"], rows), ""]
        if "apiary-worker" in h["growth"]:
            parts = h["growth"]["apiary-worker"]["sizes"]
            last = max(parts, key=int)
            out += [f"apiary worker, what is stored after turn {last}: "
                    + ", ".join(f"{k} {v / 1e3:.0f} kB" for k, v in parts[last].get("db_parts", {}).items())
                    + f", files {parts[last].get('files', 0) / 1e3:.0f} kB.", ""]
    for png, title in (("step_time.png", "time per step"), ("stored_bytes.png", "bytes stored")):
        if png in made:
            out += [f"![{title}](benchmarks/{png})", ""]
    return out


def _http_section(hh: dict[str, Any]) -> list[str]:
    if "scenarios" not in hh:
        return []
    out = ["## 3. HTTP latency (real server, demo model)", "",
           "From just before `POST /chat` to the first SSE frame of that chat, to `llm_turn_complete`, and to "
           "`client_input_requested`. Client and server share the 2 cores.", ""]
    rows = []
    for clients, sc in hh["scenarios"].items():
        for key, label in (("first_event_ms", "first event"), ("turn_complete_ms", "llm_turn_complete"),
                           ("input_requested_ms", "client_input_requested")):
            s = sc[key]
            rows.append([clients, sc["chats"], label, s["p50"], s["p90"], s["p99"], sc["chats_per_s"]])
    out += [_table(["clients", "chats", "until", "p50 ms", "p90 ms", "p99 ms", "chats/s"], rows),
            "", f"(load average before: {hh.get('loadavg_1m_before')})", ""]
    return out


def _scale_section(s: dict[str, Any], made: list[str]) -> list[str]:
    out = ["## 4. Scale on one machine", ""]
    if "sessions" in s:
        se = s["sessions"]
        out += [_table(["sessions", "RSS before MiB", "RSS after MiB", "per session MiB", "create s"],
                       [[se["sessions"], se["rss_before_mib"], se["rss_after_mib"], se["per_session_mib"],
                         se["create_s"]]]), ""]
        if "rss_sessions.png" in made:
            out += ["![RSS](benchmarks/rss_sessions.png)", ""]
    if s.get("loops"):
        out += ["Concurrent agent loops in one process on one apiary.db; the model waits `latency` per call "
                "(no CPU). Overhead = the CPU time the harness spends on one step (the event-loop callbacks "
                "of that loop, plus an equal share of the writer tasks and the SQLite thread); latency = the "
                "step's duration minus the two model waits, which with 1,000 loops on one event loop is "
                "mostly queueing behind the other loops.", "",
                _table(["loops", "latency s", "offered turns/s", "achieved turns/s", "CPU cores used",
                        "CPU ms/turn", "overhead p50 ms", "p99 ms", "latency p50 ms", "p99 ms", "failed"],
                       [[lp["loops"], lp["model_latency_s"], lp["offered_turns_per_s"], lp["achieved_turns_per_s"],
                         lp["cpu_cores_used"], lp["cpu_ms_per_turn"], lp["step_overhead_ms"]["p50"],
                         lp["step_overhead_ms"]["p99"], (lp.get("step_latency_ms") or {}).get("p50", "—"),
                         (lp.get("step_latency_ms") or {}).get("p99", "—"), lp["failed"]] for lp in s["loops"]]), ""]
    return out


def _queue_section(q: dict[str, Any]) -> list[str]:
    if "claims" not in q:
        return []
    out = ["## 5. Task queue (`progress.db`)", "",
           _table(["what", "processes", "count", "per second", "double claims (audit / returned)"],
                  [["raw SQLite single-row UPDATE transactions", x["processes"], x["transactions"], x["tx_per_s"], "-"]
                   for x in q["raw"]]
                  + [["`progress_db.claim`", c["processes"], c["claims"], c["claims_per_s"],
                      f"{c['double_claims_audit']} / {c['double_claims_returned']}"] for c in q["claims"]]
                  + [[f"`SqliteTaskQueue.claim`, {q['async_queue']['claimers']} asyncio claimers", 1,
                      q["async_queue"]["claims"], q["async_queue"]["claims_per_s"],
                      f"- / {q['async_queue']['double_claims_returned']}"]]), ""]
    return out


def _cancel_section(c: dict[str, Any]) -> list[str]:
    if "stop_to_final_event_ms" not in c:
        return []
    a, b = c["stop_to_final_event_ms"], c["stop_response_ms"]
    return ["## 6. Cancel -> quiet", "",
            _table(["stops", "stop -> final event p50 ms", "p99 ms", "max ms", "/stop answered p50 ms", "p99 ms",
                    "events after final", "tokens/tools after /stop answered", "not cancelled"],
                   [[c["stops"], a["p50"], a["p99"], a["max"], b["p50"], b["p99"], c["events_after_final"],
                     c["effects_after_stop_answered"], c["not_cancelled"]]]),
            "", f"Tokens in flight between the stop request and the final event (allowed, counted): "
            f"{c['effects_in_flight_between_stop_and_final']}. Stop -> final event p50 over the first tenth of the "
            f"stops: {c.get('first_tenth_p50_ms')} ms, over the last tenth: {c.get('last_tenth_p50_ms')} ms (every "
            "trigger reuses the session's execution id, so one worker session folder collects every run's "
            "checkpoints).", ""]


def _cold_section(cs: dict[str, Any]) -> list[str]:
    if "health_median_s" not in cs:
        return []
    modes = cs.get("modes") or {"": cs}
    return ["## 7. Cold start", "",
            _table(["code loaded", "runs", "median s", "min s", "max s", "'listening' line median s", "all runs s"],
                   [[mode, cs["runs"], m["health_median_s"], m["health_min_s"], m["health_max_s"],
                     m["listening_line_median_s"], ", ".join(str(x) for x in m["all_health_s"])]
                    for mode, m in modes.items()]),
            "", f"PYTHONDONTWRITEBYTECODE here: {cs.get('pythondontwritebytecode')!r}. "
            f"(load average before: {cs.get('loadavg_1m_before')})", ""]


def _queue_scale_section(qs: dict[str, Any], m: dict[str, Any]) -> list[str]:
    if not qs.get("runs"):
        return []
    cores = m.get("cpus_usable") or qs.get("cpus") or "?"
    out = ["## 8. Task queue scale-out: PostgreSQL vs SQLite", "",
           f"One colony, {qs['tasks']} pending tasks; P worker processes started together, each with its own "
           "queue (PostgreSQL: `PgTaskQueue` on its own pool of at most "
           f"{(qs.get('pool_per_process') or {}).get('max_size', '?')} connections; SQLite: `SqliteTaskQueue` on "
           "the one `progress.db`), each looping `claim` + `complete` until the queue is empty. Claims/s = claims "
           "/ (first start -> last completion); the two backends alternate for each P. Double claims: tasks with "
           "more than one `claimed` row in `apiary_task_events` / ids returned to more than one claim. "
           f"PostgreSQL {qs.get('pg_version', '?')} is a throwaway local server from `tests/pg_server.py` "
           f"({qs.get('pg_settings', '?')}), "
           "SQLite is WAL with `synchronous=NORMAL`: neither waits for the disk per claim.", "",
           f"**This machine has {cores} cores**: the PostgreSQL server, its backends and every worker process "
           "share them, so 4 and 16 processes measure contention (CPU, locks, round trips), not parallelism. "
           "What PostgreSQL buys is workers on other hosts; this table shows what a claim costs, not how far "
           "it scales out.", ""]
    if qs.get("pg_error"):
        out += [f"PostgreSQL side not run: {qs['pg_error']}", ""]
    by = {(x["backend"], x["processes"]): x for x in qs["runs"]}
    ratios = qs.get("ratio_pg_over_sqlite") or {}

    def doubles(x: dict[str, Any] | None) -> str:
        return "-" if x is None else f"{x['double_claims_audit']} / {x['double_claims_returned']}"

    rows = []
    for procs in sorted({p for _, p in by}):
        pg, sq = by.get(("postgres", procs)), by.get(("sqlite", procs))
        ratio = ratios.get(str(procs))
        rows.append([procs, "-" if pg is None else f"{pg['claims_per_s']:.0f}",
                     "-" if sq is None else f"{sq['claims_per_s']:.0f}", "-" if ratio is None else f"{ratio:.3f}",
                     doubles(pg), doubles(sq),
                     f"{'-' if pg is None else pg['done']} / {'-' if sq is None else sq['done']}"])
    out += [_table(["processes", "PostgreSQL claims/s", "SQLite claims/s", "ratio pg / sqlite",
                    "PostgreSQL double claims (audit / returned)", "SQLite double claims (audit / returned)",
                    "done (pg / sqlite)"], rows), ""]
    w = qs.get("pg_wire")
    if w:
        c, d = w["claim"], w["complete"]
        out += [f"One PostgreSQL claim costs {c['round_trips']:g} round trips ({c['statements']:g} statements, "
                f"BEGIN and COMMIT included, + {c['pool_checks']:g} pool connection check before lending a "
                f"connection) and one complete {d['round_trips']:g} ({d['statements']:g} + {d['pool_checks']:g}): "
                f"{c['round_trips'] + d['round_trips']:g} round trips per task (libpq protocol trace over "
                f"{w['traced']} tasks). With {w['depth']} tasks pending the claim's `SELECT ... FOR UPDATE SKIP "
                f"LOCKED` runs as `{w.get('claim_plan')}` in {w.get('claim_select_ms')} ms (EXPLAIN ANALYZE)"
                + ("; that is a sort of every pending row per claim, so a claim costs more the deeper the queue."
                   if "Sort" in str(w.get("claim_plan")) else "."), ""]
    out += [f"(load average before: {qs.get('loadavg_1m_before')})", ""]
    return out


def _profile_section(p: dict[str, Any]) -> list[str]:
    out = ["## Hot spots", ""]
    if ANALYSIS.exists():
        out += [ANALYSIS.read_text().strip(), ""]
    if not p:
        out += ["(No profiles in this run: profiles run only in a full run.)", ""]
        return out
    out += ["### Profiles of this run", "",
            "Profiled in a full run: the workloads whose goal was missed, and the queue and cancel workloads always "
            "(their goals are met on a quiet machine and missed under load).", "",
            "pyinstrument, wall clock, main thread. *self* = time in the function itself (C calls included, so "
            "`epoll.poll` is the event loop waiting — for aiosqlite's thread, the to_thread file writes, or the "
            "network), *nearest apiary function* = every sample credited to the deepest apiary function on its stack "
            "(so the event loop's idle/wait time lands on `run_server` or the benchmark's entry). Full trees: "
            "`benchmarks/results/profile-<target>.txt`.", ""]
    for target, prof in p.items():
        if "error" in prof:
            out += [f"**{target}**: could not profile: `{prof['error']}`", ""]
            continue
        if target == "coldstart":
            out += [f"**coldstart** (`-X importtime`, {prof['total_import_s']} s of imports):", "",
                    _table(["module", "depth", "s", "share"],
                           [[i["module"], i["depth"], i["seconds"], f"{i['share']:.0%}"]
                            for i in prof["imports_top"][:15]]),
                    ""]
            if "start" not in prof:
                continue
            prof = {**prof["start"], "label": "coldstart: the whole start under pyinstrument, until it listens"}
        label = prof.get("label", target)
        out += [f"**{label}** ({prof['total_s']} s profiled):", "",
                _table(["self time", "share", "nearest apiary function", "share"],
                       [[a["function"], f"{a['share']:.1%}", b["function"], f"{b['share']:.1%}"]
                        for a, b in zip(prof["self_top"][:12], prof.get("nearest_apiary_top", [])[:12],
                                        strict=False)]), ""]
        if prof.get("sql_calls_per_turn"):
            sq = prof["sql_calls_per_turn"]
            out += [f"aiosqlite calls per worker turn (each one thread round trip and one autocommit transaction): "
                    f"{sq['total_per_turn']} — " + ", ".join(f"`{k}` {v}" for k, v in sq["by_statement"].items()), ""]
        if prof.get("insert_us"):
            out += ["One 300-byte INSERT (WAL, synchronous=NORMAL), µs, median of 3x2000: "
                    + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in prof["insert_us"].items()) + ".", ""]
        if prof.get("what_if"):
            out += ["What-ifs on copies of the progress.db schema (an experiment, apiary's schema is not changed): "
                    "WAL pages written per claim are exact; claims/s are 3 alternating rounds in one process.", "",
                    _table(["schema", "WAL pages per claim", "claims/s (3 rounds)"],
                           [[w["variant"], w["wal_pages_per_claim"], ", ".join(str(x) for x in w["claims_per_s"])]
                            for w in prof["what_if"]]), ""]
        if prof.get("checkpoint_index"):
            ci = prof["checkpoint_index"]
            out += [f"After those stops the one worker session folder holds {ci['checkpoint_files']} checkpoint files; "
                    f"one `WorkerSessionFiles.write_index()` on it (which reads and parses every one) takes "
                    f"{ci['write_index_ms']} ms, and each stop runs it twice (in a thread, so the profile above "
                    "does not show it).", ""]
        if prof.get("under_profiler"):
            u = prof["under_profiler"]
            out += [f"(under the profiler: stop -> final p99 {u['stop_to_final_event_ms'].get('p99')} ms, first-tenth "
                    f"p50 {u['first_tenth_p50_ms']} ms, last-tenth p50 {u['last_tenth_p50_ms']} ms)", ""]
        if prof.get("claim_query_plan"):
            out += ["claim query plan: " + "; ".join(f"`{x}`" for x in prof["claim_query_plan"]), ""]
    return out


def main() -> None:
    if "--report" in sys.argv:   # re-render the report from results/latest.json (e.g. after editing analysis.md)
        data = json.loads((RESULTS / "latest.json").read_text())
        data["plots"] = plots(data["results"]) if importlib.util.find_spec("matplotlib") else []
        DOC.write_text(report(data))
        log(f"rewrote {DOC.relative_to(ROOT)} from {(RESULTS / 'latest.json').relative_to(ROOT)}")
        return
    quick = "--quick" in sys.argv
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    have_plots = ensure_optional("matplotlib", "matplotlib")
    have_profiler = quick or ensure_optional("pyinstrument", "pyinstrument")
    info = machine()
    results: dict[str, Any] = {}
    for name, module, full_timeout, quick_timeout in BENCHES:
        log(f"{name} ...")
        left = BUDGET_S - (time.perf_counter() - t0)
        if left < 20:
            results[name] = {"error": "skipped: the run's time budget is used up"}
            continue
        results[name] = run_module(module, ["--quick"] if quick else [],
                                   min(left, quick_timeout if quick else full_timeout))
        log(f"{name}: {'error: ' + results[name]['error'][:300] if 'error' in results[name] else 'done'}"
            f" in {results[name].get('wall_s_total', results[name].get('wall_s'))} s")
    data: dict[str, Any] = {"command": "python benchmarks/run.py" + (" --quick" if quick else ""), "quick": quick,
                            "started": started.isoformat(timespec="seconds"), "machine": info, "results": results}
    data["goals"] = goals(results)
    # Profiles: every target whose goal was missed, plus queue and cancel always (their goals are met on a quiet
    # machine and missed under load, and the hand-written analysis refers to their what-ifs).
    missed = {g["profile"] for g in data["goals"] if g["met"] is False and g["profile"]}
    targets = sorted(missed | {"queue", "cancel"})
    data["profiled_for_missed_goals"] = sorted(missed)
    if targets and not quick and have_profiler:
        log(f"profiling {', '.join(targets)} ...")
        prof = run_module("profile_hotspots.py", targets, max(30, BUDGET_S + 20 - (time.perf_counter() - t0)))
        data["profiles"] = {k: v for k, v in prof.items() if isinstance(v, dict)}
    data["plots"] = plots(results) if have_plots else []
    data["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data["wall_s"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=1))
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(report(data))
    log(f"wrote {DOC.relative_to(ROOT)} and {(RESULTS / 'latest.json').relative_to(ROOT)} in {data['wall_s']:.0f} s")
    for g in data["goals"]:
        print(f"{'ok ' if g['met'] else 'MISS' if g['met'] is False else ' ?  '} {g['benchmark']}: {g['figure']}: "
              f"{g['value']} (goal {g['goal']})")


if __name__ == "__main__":
    main()
