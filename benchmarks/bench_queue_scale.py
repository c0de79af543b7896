"""Benchmark 8: task-queue scale-out, PostgreSQL (``PgTaskQueue``) beside SQLite (``SqliteTaskQueue``).

What: one colony's queue is seeded with N pending tasks (full 2,000, quick 500). Then P worker
processes (1, 4 and 16) each open their own queue the way a worker node does (PostgreSQL:
``PgDatabase.open_unmigrated`` with its own small pool, min 1 / max 2 connections, the parent having
migrated; SQLite: one ``SqliteTaskQueue`` on the colony's ``data/progress.db`` from
``ensure_progress_db``), say they are ready, and block on their stdin; once all are ready the parent
closes every stdin (the start barrier) and each loops ``claim`` + ``complete`` until the queue is
empty. Claims/s = all claims / (first start -> last completion). The backends alternate for each
process count (SQLite P, then PostgreSQL P), so a noisy moment of the shared machine hits both.
PostgreSQL gets a fresh database per run and SQLite a fresh colony folder: both start from N rows.

Every claim is then checked: each task must be claimed exactly once (the ``claimed`` rows of the
``apiary_task_events`` audit table per task, and the ids the processes got back, must both show
no task twice), and every task must end ``done``.

Next to it, what one PostgreSQL claim and one complete cost: the plan and execution time of the
claim's ``SELECT ... FOR UPDATE SKIP LOCKED`` with N tasks pending (``EXPLAIN ANALYZE``), and, in
one process with a one-connection pool, libpq's protocol trace (``PQtrace``) while it claims and
then completes 100 tasks: round trips = frontend ``Query`` + ``Sync`` messages, statements =
``Query`` + ``Parse`` (BEGIN and COMMIT included), pool checks = the empty ``Query`` psycopg_pool
sends before lending a connection (counted as round trips, not statements).

N is smaller than bench_queue's because a PostgreSQL claim costs more the deeper the queue (the
plan above), so a full run with 4,000 tasks would not fit its time.

The PostgreSQL server is a throwaway one (``tests/pg_server.py``: initdb in a temporary folder,
loopback TCP, ``fsync=off``, ``synchronous_commit=off``), as SQLite runs WAL with
``synchronous=NORMAL`` (no fsync per commit either): neither side waits for the disk per claim. A
watchdog outside the benchmark's process group stops the server if the benchmark is killed.

Why: a colony on PostgreSQL is meant to scale out across worker hosts (``FOR UPDATE SKIP LOCKED``:
claimers never wait on each other), while progress.db serialises every claim on SQLite's one
writer. On a 2-core machine, 16 processes measure contention (and the cost of a claim in CPU and
round trips), not parallelism: the server, the clients and the claimers share the same 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, emit, quick_flag

COLONY = "bench"
PROCESSES = (1, 4, 16)
POOL = {"min_size": 1, "max_size": 2}   # per worker process


def log(msg: str) -> None:
    print(f"[queue_scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_for_go(out: str) -> None:
    """Say ready (``<out>.ready``), then block until the parent closes our stdin (the start barrier)."""
    Path(out + ".ready").touch()
    sys.stdin.read()


async def _drain(queue: Any, worker: str, out: str) -> None:
    """claim + complete until nothing is left; write the ids, the start and the last completion."""
    await queue.counts()   # connect outside the timing
    wait_for_go(out)
    got: list[str] = []
    not_completed = 0
    t0 = last = time.time()
    while (task := await queue.claim(worker)) is not None:
        got.append(task.id)
        if not await queue.complete(task.id, worker):
            not_completed += 1
        last = time.time()
    Path(out).write_text(json.dumps({"start": t0, "end": last, "ids": got, "not_completed": not_completed}))


def sqlite_worker(db: str, worker: str, out: str) -> None:
    from apiary.storage.sqlite.tasks import SqliteTaskQueue

    async def run() -> None:
        async with SqliteTaskQueue(db) as queue:
            await _drain(queue, worker, out)

    asyncio.run(run())


def pg_worker(url: str, worker: str, out: str) -> None:
    from apiary.storage.postgres.database import PgDatabase
    from apiary.storage.postgres.tasks import PgTaskQueue

    async def run() -> None:
        db = await PgDatabase.open_unmigrated(url, **POOL)   # the parent migrated
        try:
            await _drain(PgTaskQueue(db, COLONY), worker, out)
        finally:
            await db.close()

    asyncio.run(run())


def spawn(fn: str, arg: str, procs: int, tmp: Path, tag: str) -> list[dict[str, Any]]:
    """P children; once every one is imported and connected, close their stdins: all start at once."""
    outs = [tmp / f"{tag}-{n}.json" for n in range(procs)]
    children = [subprocess.Popen([sys.executable, __file__, "--child",
                                  json.dumps({"fn": fn, "args": [arg, f"w{n}", str(outs[n])]})],
                                 stdin=subprocess.PIPE) for n in range(procs)]
    try:
        deadline = time.time() + 60
        while not all(Path(str(o) + ".ready").exists() for o in outs):
            if time.time() > deadline or any(c.poll() is not None for c in children):
                raise RuntimeError(f"{fn} children did not get ready")
            time.sleep(0.005)
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child in children:
            if child.wait(timeout=120) != 0:
                raise RuntimeError(f"{fn} child failed")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return [json.loads(o.read_text()) for o in outs]


def tally(backend: str, procs: int, tasks: int, parts: list[dict[str, Any]], audit: Counter[str],
          status: dict[str, int]) -> dict[str, Any]:
    ids = [i for p in parts for i in p["ids"]]
    returned = Counter(ids)
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    return {"backend": backend, "processes": procs, "tasks": tasks, "claims": len(ids),
            "wall_s": round(wall, 3), "claims_per_s": round(len(ids) / wall, 1),
            "per_process": [len(p["ids"]) for p in parts],
            "double_claims_audit": sum(c - 1 for c in audit.values() if c > 1),
            "double_claims_returned": sum(c - 1 for c in returned.values() if c > 1),
            "not_completed": sum(p["not_completed"] for p in parts),
            "audit_claim_rows": sum(audit.values()), "done": status.get("done", 0),
            "unclaimed": status.get("pending", 0)}


# -- SQLite --------------------------------------------------------------------------------------


def sqlite_run(procs: int, tasks: int, tmp: Path, tag: str) -> dict[str, Any]:
    import sqlite3

    from apiary.storage.sqlite import progress_db as pdb

    db = pdb.ensure_progress_db(tmp / f"colony-{tag}")
    conn = pdb.connect(db)
    try:
        pdb.seed_tasks(conn, [{"goal": f"task {i}", "seq": i} for i in range(tasks)], "bench")
    finally:
        conn.close()
    parts = spawn("sqlite_worker", str(db), procs, tmp, tag)
    conn = sqlite3.connect(db)
    try:
        audit = Counter(r[0] for r in conn.execute("SELECT task_id FROM apiary_task_events WHERE kind = 'claimed'"))
        status = dict(conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall())
    finally:
        conn.close()
    return tally("sqlite", procs, tasks, parts, audit, status)


# -- PostgreSQL ----------------------------------------------------------------------------------


async def pg_seed(url: str, tasks: int) -> None:
    from apiary.storage.postgres.database import PgDatabase
    from apiary.storage.postgres.tasks import PgTaskQueue

    db = await PgDatabase.open(url)   # migrates
    try:
        queue = PgTaskQueue(db, COLONY)
        for start in range(0, tasks, 500):
            await queue.enqueue([{"goal": f"task {i}", "seq": i} for i in range(start, min(tasks, start + 500))],
                                "bench")
        await db.execute("ANALYZE apiary_tasks")
    finally:
        await db.close()


async def pg_check(url: str) -> tuple[Counter[str], dict[str, int]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT task_id FROM apiary_task_events WHERE colony = %s AND kind = 'claimed'",
                                 (COLONY,))
        audit = Counter(r[0] for r in await cur.fetchall())
        cur = await conn.execute("SELECT status, COUNT(*) FROM apiary_tasks WHERE colony = %s GROUP BY status",
                                 (COLONY,))
        status = dict(await cur.fetchall())
    return audit, status


def pg_run(server: Any, procs: int, tasks: int, tmp: Path, tag: str) -> dict[str, Any]:
    url = server.create_database(tag.replace("-", "_"))
    asyncio.run(pg_seed(url, tasks))
    parts = spawn("pg_worker", url, procs, tmp, tag)
    audit, status = asyncio.run(pg_check(url))
    return tally("postgres", procs, tasks, parts, audit, status)


def _messages(trace: Path) -> Counter[str]:
    """Frontend message types in a libpq trace (``F <length> <type> <fields>``); an empty ``Query`` (the
    pool's connection check) is counted as ``check``."""
    out: Counter[str] = Counter()
    for line in trace.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if "F" in fields[:2]:
            at = fields.index("F")
            if len(fields) > at + 2:
                kind = fields[at + 2].split(" ")[0]
                empty = kind == "Query" and len(fields) > at + 3 and fields[at + 3].strip() == '""'
                out["check" if empty else kind] += 1
    return out


def _chain(plan: dict[str, Any]) -> str:
    nodes = []
    while plan:
        nodes.append(plan["Node Type"] + (f" ({plan['Index Name']})" if plan.get("Index Name") else ""))
        plan = (plan.get("Plans") or [{}])[0]
    return " > ".join(nodes)


async def pg_wire(url: str, depth: int, traced: int, tmp: Path) -> dict[str, Any]:
    """The claim query's plan with ``depth`` tasks pending; then round trips and statements per claim and
    per complete over ``traced`` of them: one connection, libpq's protocol trace."""
    from psycopg import pq

    from apiary.storage.postgres.database import PgDatabase
    from apiary.storage.postgres.tasks import _ORDER, PgTaskQueue  # _ORDER: the claim's own ORDER BY

    await pg_seed(url, depth)
    db = await PgDatabase.open(url, min_size=1, max_size=1)
    out: dict[str, Any] = {"depth": depth, "traced": traced}
    try:
        row = await db.fetchone(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM apiary_tasks WHERE colony = %s AND status = 'pending'"
            f" ORDER BY {_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED", (COLONY,))
        plan = (json.loads(row[0]) if isinstance(row[0], str) else row[0])[0] if row else {}
        out["claim_plan"] = _chain(plan.get("Plan") or {})
        out["claim_select_ms"] = plan.get("Execution Time")
        queue = PgTaskQueue(db, COLONY)
        async with db.pool.connection() as conn:
            pgconn = conn.pgconn
        claimed = []
        for phase in ("claim", "complete"):
            path = tmp / f"trace-{phase}.txt"
            with path.open("w") as fh:
                pgconn.trace(fh.fileno())
                pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
                if phase == "claim":
                    for n in range(traced):
                        task = await queue.claim("wire")
                        assert task is not None, n
                        claimed.append(task.id)
                else:
                    for task_id in claimed:
                        assert await queue.complete(task_id, "wire")
                pgconn.untrace()   # flushes
            m = _messages(path)
            out[phase] = {"round_trips": round((m["check"] + m["Query"] + m["Sync"]) / traced, 2),
                          "pool_checks": round(m["check"] / traced, 2),
                          "statements": round((m["Query"] + m["Parse"]) / traced, 2),
                          "messages": {k: round(v / traced, 2) for k, v in sorted(m.items())}}
    finally:
        await db.close()
    return out


def watchdog(parent: int, bindir: str, data: str, root: str) -> None:
    """Outside the benchmark's process group: stop the server if the benchmark is killed (a timeout)."""
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    cmd = [str(Path(bindir) / "pg_ctl"), "-D", data, "-m", "immediate", "stop"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    shutil.rmtree(root, ignore_errors=True)


def pg_version(server: Any) -> str:
    import psycopg

    with psycopg.connect(server.url()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def main() -> None:
    quick = quick_flag()
    tasks = 500 if quick else 2000
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_server import PostgresServer, find_bindir

    result: dict[str, Any] = {"quick": quick, "tasks": tasks, "pool_per_process": POOL, "cpus": os.cpu_count(),
                              "runs": []}
    bindir = find_bindir()
    server = None
    guard = None
    with tempfile.TemporaryDirectory(prefix="apiary-bench-queue-scale-") as name:
        tmp = Path(name)
        try:
            if bindir is None:
                result["pg_error"] = "PostgreSQL binaries not found (install postgresql or set APIARY_PG_BINDIR)"
            else:
                t0 = time.perf_counter()
                server = PostgresServer(bindir)
                guard = subprocess.Popen([sys.executable, __file__, "--watchdog", json.dumps(
                    [os.getpid(), str(bindir), str(server.data), str(server.root)])], start_new_session=True)
                server.start()
                result["pg_start_s"] = round(time.perf_counter() - t0, 2)
                result["pg_version"] = pg_version(server)
                result["pg_settings"] = "fsync=off, synchronous_commit=off, full_page_writes=off"
            for procs in PROCESSES:
                for backend in ("sqlite", "postgres") if server is not None else ("sqlite",):
                    t1 = time.perf_counter()
                    run = (sqlite_run(procs, tasks, tmp, f"sqlite-p{procs}") if backend == "sqlite" else
                           pg_run(server, procs, tasks, tmp, f"pg-p{procs}"))
                    run["run_s_total"] = round(time.perf_counter() - t1, 2)
                    result["runs"].append(run)
                    log(f"{backend}, {procs} process(es): {run['claims_per_s']:.0f} claims/s"
                        f" ({run['wall_s']:.2f} s measured, {run['run_s_total']:.1f} s with setup)")
            if server is not None:
                result["pg_wire"] = asyncio.run(pg_wire(server.create_database("wire"), tasks, 100, tmp))
        finally:
            if server is not None:
                server.stop()
            if guard is not None:
                guard.send_signal(signal.SIGKILL)
                guard.wait()
    ratios = {}
    for procs in PROCESSES:
        by = {r["backend"]: r for r in result["runs"] if r["processes"] == procs}
        if "sqlite" in by and "postgres" in by:
            ratios[str(procs)] = round(by["postgres"]["claims_per_s"] / by["sqlite"]["claims_per_s"], 3)
    result["ratio_pg_over_sqlite"] = ratios
    emit(result)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        spec = json.loads(sys.argv[2])
        {"sqlite_worker": sqlite_worker, "pg_worker": pg_worker}[spec["fn"]](*spec["args"])
    elif len(sys.argv) > 2 and sys.argv[1] == "--watchdog":
        watchdog(*json.loads(sys.argv[2]))
    else:
        main()
