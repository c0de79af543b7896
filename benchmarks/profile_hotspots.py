"""Profiles of the workloads that miss a goal, to name the hot spots (not a benchmark itself).

Targets (``run.py`` picks those whose goal was missed; all with ``--all``):
- ``harness``: one apiary worker execution of 100 turns on the scripted model (bench_harness's
  workload), in this process, under pyinstrument (wall clock, main thread, async off: time spent
  waiting in the event loop for aiosqlite's thread shows up as ``select``).
- ``server``: a real ``apiary serve`` under ``pyinstrument -m apiary serve``, while 30 clients chat
  (5 chats each, like bench_http's 100-client case but shorter); written when the server exits.
- ``loops``: 200 concurrent AgentLoops with 0.2 s model waits (bench_scale part B, smaller).
- ``queue``: one process claiming 5,000 tasks with ``progress_db.claim``; plus what-ifs on copies of
  the schema (WAL pages written per claim, exact; and claims/s) to locate the cost.
- ``cancel``: the server under pyinstrument while bench_cancel's loop runs 40 stops.
- ``coldstart``: ``python -X importtime -c "import apiary.server.app, apiary.cli.main"``, the import
  cost per package, and the whole start under pyinstrument until it listens; both with apiary's
  bytecode cached (as bench_coldstart's headline).

For each profile: the functions with the most self time, and the apiary functions with the most
inclusive time, each as a share of the profile's total; the full text tree goes to
``benchmarks/results/profile-<target>.txt``.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH, clean_env, emit

RESULTS = BENCH / "results"


def _key(frame: Any) -> str:
    where = f"{frame.file_path_short}:{frame.line_no}" if frame.file_path_short else "?"
    return f"{frame.function} ({where})"


def _walk(frame: Any, path: tuple[str, ...], self_t: dict[str, float], incl: dict[str, float]) -> None:
    key = _key(frame)
    for child in frame.children:
        if child.function.startswith("[") or child.is_synthetic:   # [self], [await], ...: the parent's own time
            self_t[key] += child.time
    own = frame.time - sum(c.time for c in frame.children)
    self_t[key] += max(0.0, own)
    if key not in path:   # count a function once per stack (recursion)
        incl[key] += frame.time
    for child in frame.children:
        if not (child.function.startswith("[") or child.is_synthetic):
            _walk(child, (*path, key), self_t, incl)


def _is_apiary(key: str) -> bool:
    return "apiary/" in key and "benchmarks" not in key and not key.startswith("<module>")


def _nearest(frame: Any, owner: str, out: dict[str, float]) -> None:
    """Credit each bit of time to the deepest apiary function on its stack."""
    key = _key(frame)
    if _is_apiary(key):
        owner = key
    own = frame.time - sum(c.time for c in frame.children if not (c.function.startswith("[") or c.is_synthetic))
    out[owner] += max(0.0, own)
    for child in frame.children:
        if not (child.function.startswith("[") or child.is_synthetic):
            _nearest(child, owner, out)


def summarize(session: Any, label: str, top: int = 15) -> dict[str, Any]:
    from pyinstrument.renderers import ConsoleRenderer

    root = session.root_frame()
    self_t: dict[str, float] = defaultdict(float)
    incl: dict[str, float] = defaultdict(float)
    nearest: dict[str, float] = defaultdict(float)
    if root is not None:
        _walk(root, (), self_t, incl)
        _nearest(root, "(outside apiary)", nearest)
    total = root.time if root is not None else 0.0
    text = ConsoleRenderer(unicode=False, color=False, show_all=False, time="percent_of_total").render(session)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile-{label}.txt").write_text(text)

    def share(d: dict[str, float], pred: Any) -> list[dict[str, Any]]:
        items = sorted(((k, v) for k, v in d.items() if pred(k)), key=lambda kv: -kv[1])[:top]
        return [{"function": k, "seconds": round(v, 4), "share": round(v / total, 4) if total else 0} for k, v in items]

    return {"total_s": round(total, 3), "self_top": share(self_t, lambda k: True),
            "apiary_inclusive_top": share(incl, _is_apiary),
            "nearest_apiary_top": share(nearest, lambda k: True)}


def profile_harness() -> dict[str, Any]:
    from bench_harness import run_apiary
    from pyinstrument import Profiler

    import apiary.colonies.runtime
    import apiary.storage.sqlite.stores  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="apiary-prof-") as tmp:
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        asyncio.run(run_apiary("apiary-worker", 100, [], Path(tmp) / "home"))
        session = profiler.stop()
    out = summarize(session, "harness")
    out["sql_calls_per_turn"] = sql_calls_per_turn()
    out["insert_us"] = asyncio.run(insert_cost())
    return out


async def insert_cost(n: int = 2000) -> dict[str, float]:
    """µs per 300-byte INSERT into an events-like table (WAL, synchronous=NORMAL): through aiosqlite in
    autocommit (what apiary does per statement), plain sqlite3 in autocommit, and sqlite3 inside one
    transaction (what a group commit would pay per row)."""
    import sqlite3

    import aiosqlite

    ddl = "CREATE TABLE e (s TEXT, id INTEGER, body TEXT, PRIMARY KEY (s, id)) WITHOUT ROWID"
    body = "x" * 300
    out: dict[str, list[float]] = {"aiosqlite_autocommit": [], "sqlite3_autocommit": [], "sqlite3_one_transaction": []}
    with tempfile.TemporaryDirectory(prefix="apiary-prof-") as tmp:
        a = await aiosqlite.connect(Path(tmp) / "a.db", isolation_level=None)
        s = sqlite3.connect(Path(tmp) / "s.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            await a.execute(f"PRAGMA {pragma}")
            s.execute(f"PRAGMA {pragma}")
        await a.execute(ddl)
        s.execute(ddl)
        for r in range(3):
            t0 = time.perf_counter()
            for i in range(n):
                await a.execute("INSERT INTO e VALUES (?, ?, ?)", ("s", r * n + i, body))
            out["aiosqlite_autocommit"].append((time.perf_counter() - t0) / n * 1e6)
            t0 = time.perf_counter()
            for i in range(n):
                s.execute("INSERT INTO e VALUES (?, ?, ?)", ("s", r * n + i, body))
            out["sqlite3_autocommit"].append((time.perf_counter() - t0) / n * 1e6)
            t0 = time.perf_counter()
            s.execute("BEGIN")
            for i in range(n):
                s.execute("INSERT INTO e VALUES (?, ?, ?)", ("t", r * n + i, body))
            s.execute("COMMIT")
            out["sqlite3_one_transaction"].append((time.perf_counter() - t0) / n * 1e6)
        await a.close()
        s.close()
    return {k: round(sorted(v)[1], 1) for k, v in out.items()}   # the median of 3


def sql_calls_per_turn(turns: int = 50) -> dict[str, Any]:
    """How many aiosqlite calls (each a round trip to its thread, each its own transaction) one worker turn makes."""
    from collections import Counter

    import aiosqlite.core as core
    from bench_harness import run_apiary

    counts: Counter[str] = Counter()
    original = core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sql = args[0] if args and isinstance(args[0], str) else getattr(fn, "__name__", "call")
        words = sql.split()
        upper = [w.upper() for w in words]
        cut = next((i + 2 for i, w in enumerate(upper) if w in ("INTO", "FROM", "UPDATE")), 3)
        counts[" ".join(words[:cut]) if words else sql] += 1
        return await original(self, fn, *args, **kwargs)

    core.Connection._execute = counted  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory(prefix="apiary-prof-") as tmp:
            asyncio.run(run_apiary("apiary-worker", turns, [], Path(tmp) / "home"))
    finally:
        core.Connection._execute = original  # type: ignore[method-assign]
    per_turn = {k: round(v / (turns + 1), 2) for k, v in counts.most_common() if v >= turns}
    return {"total_per_turn": round(sum(v for v in counts.values()) / (turns + 1), 1), "by_statement": per_turn}


def profile_loops() -> dict[str, Any]:
    from bench_scale import loops_under_load
    from pyinstrument import Profiler

    import apiary.agent.loop
    import apiary.storage.sqlite.stores  # noqa: F401

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    asyncio.run(loops_under_load(200, 1, 0.2))
    session = profiler.stop()
    return summarize(session, "loops")


def profile_queue() -> dict[str, Any]:
    from bench_queue import seed
    from pyinstrument import Profiler

    from apiary.storage.sqlite import progress_db as pdb

    with tempfile.TemporaryDirectory(prefix="apiary-prof-") as tmp:
        db = seed(Path(tmp) / "colony", 5000)
        conn = pdb.connect(db)
        profiler = Profiler(interval=0.0002)
        profiler.start()
        while pdb.claim(conn, "w") is not None:
            pass
        session = profiler.stop()
        plan = [tuple(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN " + pdb._CLAIM_NEXT,
            {"worker": "w", "token": "t", "now": "now", "task_id": None}).fetchall()]
        conn.close()
    out = summarize(session, "queue")
    out["claim_query_plan"] = [str(p[-1]) for p in plan]
    out["what_if"] = queue_what_if()
    return out


def _variant_db(tmp: Path, kind: str, tasks: int) -> Any:
    """A seeded progress.db, changed as ``kind`` says (an experiment: apiary's schema is not touched)."""
    from bench_queue import seed

    from apiary.storage.sqlite import progress_db as pdb

    db = seed(tmp / kind, tasks)
    conn = pdb.connect(db)
    if kind in ("no AUTOINCREMENT", "both"):
        conn.execute("DROP TABLE apiary_task_events")
        conn.execute("CREATE TABLE apiary_task_events (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, at TEXT NOT NULL,"
                     " worker_id TEXT, kind TEXT NOT NULL, from_status TEXT, to_status TEXT, detail TEXT)")
    if kind in ("no idx_tasks_status", "both"):
        conn.execute("DROP INDEX idx_tasks_status")
    if kind == "no audit trigger":
        conn.execute("DROP TRIGGER apiary_trg_task_status")
    return db, conn


def queue_what_if() -> list[dict[str, Any]]:
    """WAL pages written per claim (exact) and claims/s (3 alternating rounds) for schema variants."""
    import os as _os

    from apiary.storage.sqlite import progress_db as pdb

    kinds = ("as shipped", "no AUTOINCREMENT", "no idx_tasks_status", "both", "no audit trigger")
    rows = {k: {"variant": k, "claims_per_s": []} for k in kinds}
    with tempfile.TemporaryDirectory(prefix="apiary-prof-q-") as name:
        tmp = Path(name)
        for k in kinds:
            db, conn = _variant_db(tmp / "pages", k, 1000)
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for _ in range(300):
                pdb.claim(conn, "w")
            rows[k]["wal_pages_per_claim"] = round((_os.path.getsize(str(db) + "-wal") - 32) / (4096 + 24) / 300, 2)
            conn.close()
        for r in range(3):
            for k in kinds:
                db, conn = _variant_db(tmp / f"rate{r}", k, 3000)
                t0 = time.perf_counter()
                n = 0
                while pdb.claim(conn, "w") is not None:
                    n += 1
                rows[k]["claims_per_s"].append(round(n / (time.perf_counter() - t0)))
                conn.close()
    return list(rows.values())


async def _chat_load(api: str, clients: int, chats: int) -> None:
    from bench_http import scenario

    await scenario(api, clients, chats)


def profile_server() -> dict[str, Any]:
    from pyinstrument.session import Session

    with tempfile.TemporaryDirectory(prefix="apiary-prof-") as tmp:
        out = Path(tmp) / "server.pyisession"

        async def go() -> None:
            # pyinstrument runs the module as __main__ and writes its session when the process ends.
            server = await _start_wrapped(Path(tmp) / "home", out)
            try:
                await _chat_load(server.api, 30, 150)
            finally:
                await server.stop()

        asyncio.run(go())
        deadline = time.time() + 20
        while not out.exists() and time.time() < deadline:
            time.sleep(0.2)
        session = Session.load(str(out))
    return summarize(session, "server")


async def _start_wrapped(home: Path, out: Path, env: dict[str, str] | None = None) -> Any:
    from _common import Server

    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyinstrument", "-i", "0.001", "-r", "session", "-o", str(out), "-m", "apiary",
        "--log-level", "warning", "serve", "--port", "0", "--home", str(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=str(home), env=env or clean_env())
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    found = re.search(r"listening on (http://\S+)", line)
    if not found:
        proc.send_signal(signal.SIGKILL)
        raise RuntimeError(f"unexpected line {line!r}")
    return Server(proc, found.group(1), home, started, time.perf_counter())


def profile_cancel() -> dict[str, Any]:
    """The server under pyinstrument while bench_cancel's loop runs 40 stops."""
    from bench_cancel import run
    from pyinstrument.session import Session

    with tempfile.TemporaryDirectory(prefix="apiary-prof-") as tmp:
        out = Path(tmp) / "cancel.pyisession"

        async def go() -> dict[str, Any]:
            server = await _start_wrapped(Path(tmp) / "home", out)
            try:
                return await run(server.api, 40)
            finally:
                await server.stop()

        figures = asyncio.run(go())
        deadline = time.time() + 20
        while not out.exists() and time.time() < deadline:
            time.sleep(0.2)
        result = summarize(Session.load(str(out)), "cancel")
        # The thread work pyinstrument does not see: the checkpoint index rewritten at each stop lists the folder.
        from apiary.colonies.worker_session import WorkerSessionFiles

        for folder in (Path(tmp) / "home" / "agents" / "b" / "sessions").glob("*"):
            files = WorkerSessionFiles(folder)
            t0 = time.perf_counter()
            for _ in range(3):
                files.write_index()
            result["checkpoint_index"] = {
                "checkpoint_files": len(list(files.checkpoints_dir.glob("cp_*.json"))),
                "write_index_ms": round((time.perf_counter() - t0) / 3 * 1000, 2)}
    result["under_profiler"] = {k: figures[k] for k in ("stop_to_final_event_ms", "first_tenth_p50_ms",
                                                        "last_tenth_p50_ms")}
    return result


def profile_coldstart() -> dict[str, Any]:
    """With apiary's bytecode cached (as bench_coldstart's headline), so what is left is not compiling."""
    from bench_coldstart import envs
    from pyinstrument.session import Session

    with tempfile.TemporaryDirectory(prefix="apiary-prof-") as tmp_name:
        tmp = Path(tmp_name)
        env = envs(tmp)["bytecode cached"]
        cmd = [sys.executable, "-X", "importtime", "-c", "import apiary.server.app, apiary.cli.main"]
        subprocess.run(cmd, capture_output=True, env=env, cwd=tmp_name)   # fills the bytecode cache
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_name)
        rows = []
        for line in out.stderr.splitlines():
            parts = line.split("|")
            if len(parts) != 3 or not parts[1].strip().isdigit():
                continue
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            rows.append((depth, name.strip(), int(parts[1].strip()) / 1e6))
        total = sum(t for d, _, t in rows if d == 0)
        top = sorted((r for r in rows if 1 <= r[0] <= 2), key=lambda r: -r[2])[:25]
        (RESULTS / "profile-coldstart-imports.txt").write_text(out.stderr)
        result: dict[str, Any] = {"total_import_s": round(total, 3),
                                  "imports_top": [{"module": n, "depth": d, "seconds": round(t, 4),
                                                   "share": round(t / total, 4)} for d, n, t in top]}
        # And the whole start under pyinstrument, stopped (SIGTERM) as soon as it printed that it listens.
        session_file = tmp / "start.pyisession"

        async def go() -> None:
            server = await _start_wrapped(tmp / "home", session_file, env)
            await server.stop()

        asyncio.run(go())
        deadline = time.time() + 20
        while not session_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        result["start"] = summarize(Session.load(str(session_file)), "coldstart")
    return result


TARGETS = {"harness": profile_harness, "server": profile_server, "loops": profile_loops, "queue": profile_queue,
           "cancel": profile_cancel, "coldstart": profile_coldstart}


def main() -> None:
    wanted = [a for a in sys.argv[1:] if not a.startswith("-")]
    if "--all" in sys.argv or not wanted:
        wanted = list(TARGETS)
    out: dict[str, Any] = {}
    for name in wanted:
        try:
            out[name] = TARGETS[name]()
        except Exception as exc:  # a profile that cannot run is reported, not fatal
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    emit(out)


if __name__ == "__main__":
    main()
