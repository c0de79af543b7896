"""Benchmark 5: task-queue claims per second on one ``progress.db``, with 1 and 8 processes.

What: a colony's ``data/progress.db`` (made by ``ensure_progress_db``) is seeded with M pending tasks
(quick: fewer). Then 1 or 8 processes, started together behind a barrier, each open their own
connection with ``progress_db.connect`` and call ``progress_db.claim`` until the queue is empty.
Claims/s = all claims / (last finish - first start). Every claim is then checked: each task must
be claimed exactly once (the ``claimed`` rows of the ``apiary_task_events`` audit table per task,
and the ids the processes got back, must both show no task twice). Also the asyncio path the server
uses (``SqliteTaskQueue`` with 8 concurrent claimers in one process).

Next to it, the physical limit of the same disk and the same pragmas: single-row ``UPDATE``
transactions (``BEGIN IMMEDIATE``/``UPDATE ... WHERE id = ?``/``COMMIT``) on a plain table in a WAL
database with ``synchronous=NORMAL``, from 1 and 8 processes.

Why: claims serialise on SQLite's one writer, so the rate of tiny write transactions is the ceiling;
how close a claim (a subquery, an UPDATE ... RETURNING, an audit-row trigger) comes to it is the
queue's own cost.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, quick_flag


def seed(colony: Path, count: int) -> Path:
    from apiary.storage.sqlite import progress_db as pdb

    db = pdb.ensure_progress_db(colony)
    conn = pdb.connect(db)
    try:
        batch = 5000
        for start in range(0, count, batch):
            pdb.seed_tasks(conn, [{"goal": f"task {i}", "seq": i} for i in range(start, min(count, start + batch))],
                           "bench")
    finally:
        conn.close()
    return db


def wait_for_go(go: str, out: str) -> None:
    """Say ready (``<out>.ready``), then wait until the parent creates ``go``."""
    Path(out + ".ready").touch()
    while not Path(go).exists():
        time.sleep(0.0005)


def claimer(db: str, worker: str, go: str, out: str) -> None:
    """One process: connect, wait for the start, claim until nothing is left, write what it got."""
    from apiary.storage.sqlite import progress_db as pdb

    conn = pdb.connect(db)
    got: list[str] = []
    wait_for_go(go, out)
    t0 = time.time()
    while True:
        task = pdb.claim(conn, worker)
        if task is None:
            break
        got.append(task.id)
    t1 = time.time()
    conn.close()
    Path(out).write_text(json.dumps({"start": t0, "end": t1, "ids": got}))


def raw_writer(db: str, rows: int, count: int, offset: int, go: str, out: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    wait_for_go(go, out)
    t0 = time.time()
    for n in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE t SET v = v + 1 WHERE id = ?", ((offset + n) % rows,))
        conn.execute("COMMIT")
    t1 = time.time()
    conn.close()
    Path(out).write_text(json.dumps({"start": t0, "end": t1, "ids": []}))


def spawn(fn: str, args: list[Any], procs: int, tmp: Path) -> list[dict[str, Any]]:
    go = str(tmp / f"go-{fn}-{procs}")   # created once every child is imported and connected
    outs = [tmp / f"{fn}-{procs}-{n}.json" for n in range(procs)]
    children = []
    for n in range(procs):
        call = json.dumps({"fn": fn, "args": [*args(n), go, str(outs[n])] if callable(args) else
                           [*args, f"w{n}", go, str(outs[n])]})
        children.append(subprocess.Popen([sys.executable, __file__, "--child", call]))
    deadline = time.time() + 60
    while not all(Path(str(o) + ".ready").exists() for o in outs):
        if time.time() > deadline or any(c.poll() not in (None, 0) for c in children):
            raise RuntimeError(f"{fn} children did not get ready")
        time.sleep(0.005)
    Path(go).touch()
    for child in children:
        if child.wait(timeout=300) != 0:
            raise RuntimeError(f"{fn} child failed")
    return [json.loads(o.read_text()) for o in outs]


def rate(parts: list[dict[str, Any]], count: int) -> float:
    return count / (max(p["end"] for p in parts) - min(p["start"] for p in parts))


def claims(procs: int, tasks: int, tmp: Path) -> dict[str, Any]:
    colony = tmp / f"colony{procs}"
    db = seed(colony, tasks)
    parts = spawn("claimer", [str(db)], procs, tmp)
    ids = [i for p in parts for i in p["ids"]]
    conn = sqlite3.connect(db)
    try:
        audit = Counter(r[0] for r in conn.execute("SELECT task_id FROM apiary_task_events WHERE kind = 'claimed'"))
        pending = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'pending'").fetchone()[0]
    finally:
        conn.close()
    returned = Counter(ids)
    return {"processes": procs, "tasks": tasks, "claims": len(ids),
            "claims_per_s": round(rate(parts, len(ids)), 1),
            "per_process": [len(p["ids"]) for p in parts],
            "double_claims_audit": sum(c - 1 for c in audit.values() if c > 1),
            "double_claims_returned": sum(c - 1 for c in returned.values() if c > 1),
            "unclaimed": pending, "audit_claim_rows": sum(audit.values())}


def raw(procs: int, count: int, tmp: Path) -> dict[str, Any]:
    db = tmp / f"raw{procs}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    rows = 10000
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(rows)])
    conn.execute("COMMIT")
    conn.close()
    each = count // procs
    parts = spawn("raw_writer", lambda n: [str(db), rows, each, n * each], procs, tmp)
    return {"processes": procs, "transactions": each * procs, "tx_per_s": round(rate(parts, each * procs), 1)}


async def async_queue(tasks: int, claimers: int, tmp: Path) -> dict[str, Any]:
    from apiary.storage.sqlite.tasks import SqliteTaskQueue

    colony = tmp / "colony-async"
    db = seed(colony, tasks)
    got: list[str] = []
    async with SqliteTaskQueue(db) as queue:
        await queue.counts()   # open the connection outside the timing

        async def run(n: int) -> None:
            while (task := await queue.claim(f"a{n}")) is not None:
                got.append(task.id)

        t0 = time.perf_counter()
        await asyncio.gather(*(run(n) for n in range(claimers)))
        wall = time.perf_counter() - t0
    return {"processes": 1, "claimers": claimers, "claims": len(got), "claims_per_s": round(len(got) / wall, 1),
            "double_claims_returned": len(got) - len(set(got))}


def main() -> None:
    quick = quick_flag()
    tasks = 2000 if quick else 20000
    with tempfile.TemporaryDirectory(prefix="apiary-bench-queue-") as name:
        tmp = Path(name)
        result = {"quick": quick, "disk_dir": str(tmp),
                  "raw": [raw(1, tasks, tmp), raw(8, tasks, tmp)],
                  "claims": [claims(1, tasks, tmp), claims(8, tasks, tmp)],
                  "async_queue": asyncio.run(async_queue(tasks, 8, tmp))}
    emit(result)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        spec = json.loads(sys.argv[2])
        {"claimer": claimer, "raw_writer": raw_writer}[spec["fn"]](*spec["args"])
    else:
        main()
