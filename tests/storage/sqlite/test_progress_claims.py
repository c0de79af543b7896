"""Concurrent claiming: eight processes (acceptance 16) and a state machine over the queue."""

from __future__ import annotations

import importlib
import multiprocessing
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from apiary.storage.sqlite import progress_db as pdb

ACTIVE = ("claimed", "in_progress")
TERMINAL = ("done", "failed")


# -- acceptance 16 -------------------------------------------------------------------------------


def test_eight_processes_claim_each_task_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned children inherit sys.path
    worker = importlib.import_module("_progress_mp_worker")
    colony = tmp_path / "colonies" / "swarm"
    colony.mkdir(parents=True)
    db = pdb.ensure_progress_db(colony)
    conn = pdb.connect(db)
    seeded = pdb.seed_tasks(conn, [{"goal": f"task {i}", "priority": i % 3} for i in range(1000)], "test")

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker.claim_until_empty, args=(str(db), f"proc-{n}", barrier, results), daemon=True)
        for n in range(8)
    ]
    for proc in procs:
        proc.start()
    try:
        reports = [results.get(timeout=90) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()

    assert [(w, err) for w, _, err in reports if err] == []
    claimed = [task_id for _, ids, _ in reports for task_id in ids]
    assert len(claimed) == 1000
    assert set(claimed) == set(seeded)
    assert sum(1 for _, ids, _ in reports if ids) >= 2  # they really raced
    assert pdb.task_counts(conn) == {
        "total": 1000, "pending": 0, "claimed": 0, "in_progress": 0, "done": 1000, "failed": 0
    }  # fmt: skip
    per_task = conn.execute(
        "SELECT COUNT(*), MIN(n), MAX(n) FROM (SELECT task_id, COUNT(*) AS n FROM apiary_task_events"
        " WHERE kind = 'claimed' GROUP BY task_id)"
    ).fetchone()
    assert per_task == (1000, 1, 1)
    holders = dict(conn.execute("SELECT id, worker_id FROM tasks"))
    for worker_id, ids, _ in reports:
        assert all(holders[task_id] == worker_id for task_id in ids)
    conn.close()


# -- state machine -------------------------------------------------------------------------------

WORKERS = st.sampled_from(["w1", "w2", "w3"])


class QueueMachine(RuleBasedStateMachine):
    """The model: each task's status, holder and retry count; the database must always agree."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="apiary-queue-sm-"))
        self.conn = pdb.connect(self.dir / "progress.db")
        pdb.ensure_schema(self.conn)
        self.status: dict[str, str] = {}
        self.holder: dict[str, str] = {}
        self.retries: dict[str, int] = {}
        self.max_retries: dict[str, int] = {}

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # Insertion order and fixed ids, never random uuids: hypothesis must replay the same draws.
    def _held(self) -> list[str]:
        return list(self.holder)

    def _known(self) -> list[str]:
        return list(self.status)

    @rule(n=st.integers(1, 3), priority=st.integers(-1, 1), max_retries=st.integers(0, 2))
    def enqueue(self, n: int, priority: int, max_retries: int) -> None:
        start = len(self.status)
        tasks = [
            {"id": f"t{start + i}", "goal": "g", "priority": priority, "max_retries": max_retries} for i in range(n)
        ]
        for task_id in pdb.seed_tasks(self.conn, tasks, "sm"):
            self.status[task_id] = "pending"
            self.retries[task_id] = 0
            self.max_retries[task_id] = max_retries

    @rule(worker=WORKERS)
    def claim_next(self, worker: str) -> None:
        got = pdb.claim(self.conn, worker)
        pending = {t for t, s in self.status.items() if s == "pending"}
        if got is None:
            assert not pending
            return
        assert got.id in pending, f"claimed {got.id} in state {self.status.get(got.id)}"
        self.status[got.id] = "claimed"
        self.holder[got.id] = worker

    @precondition(lambda self: self.status)
    @rule(worker=WORKERS, data=st.data())
    def claim_by_id(self, worker: str, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self._known()))
        got = pdb.claim(self.conn, worker, task_id=task_id)
        assert (got is not None) == (self.status[task_id] == "pending")
        if got is not None:
            self.status[task_id] = "claimed"
            self.holder[task_id] = worker

    @precondition(lambda self: self.status)
    @rule(
        worker=WORKERS,
        data=st.data(),
        action=st.sampled_from(["heartbeat", "start", "complete", "fail", "release"]),
    )
    def act(self, worker: str, data: st.DataObject, action: str) -> None:
        # Mostly the holder acts, sometimes someone else: both must behave.
        task_id = data.draw(st.sampled_from(self._held() or self._known()))
        if action == "fail":
            ok = pdb.fail(self.conn, task_id, worker, "boom")
        else:
            ok = getattr(pdb, action)(self.conn, task_id, worker)
        held = self.holder.get(task_id) == worker
        assert ok == held
        if not held:
            return
        if action == "start":
            self.status[task_id] = "in_progress"
        elif action in ("complete", "fail", "release"):
            self.status[task_id] = {"complete": "done", "fail": "failed", "release": "pending"}[action]
            del self.holder[task_id]

    @precondition(lambda self: self.holder)
    @rule(data=st.data())
    def backdate_and_reclaim(self, data: st.DataObject) -> None:
        stale = data.draw(st.sets(st.sampled_from(self._held()), min_size=1))
        for task_id in stale:
            self.conn.execute("UPDATE tasks SET claimed_at = datetime('now', '-16 minutes') WHERE id = ?", (task_id,))
        back = {t for t in stale if self.retries[t] < self.max_retries[t]}
        assert pdb.reclaim_stale(self.conn, stale_claim_s=900) == len(back)
        for task_id in stale:
            del self.holder[task_id]
            if task_id in back:
                self.status[task_id] = "pending"
                self.retries[task_id] += 1
            else:
                self.status[task_id] = "failed"

    @rule()
    def reclaim_fresh_claims_is_a_no_op(self) -> None:
        assert pdb.reclaim_stale(self.conn, stale_claim_s=900) == 0

    @invariant()
    def database_matches_model(self) -> None:
        for task_id, status, worker_id, retry_count in self.conn.execute(
            "SELECT id, status, worker_id, retry_count FROM tasks"
        ):
            assert status == self.status[task_id]
            # one holder per task, and only while claimed or in progress
            assert (status in ACTIVE) == (task_id in self.holder)
            if status in ACTIVE:
                assert worker_id == self.holder[task_id]
            # retry_count only grows (the model only ever adds to it)
            assert retry_count == self.retries[task_id]

    @invariant()
    def finished_tasks_stay_finished(self) -> None:
        rows = self.conn.execute(
            "SELECT task_id, kind FROM apiary_task_events WHERE kind IN ('claimed', 'done', 'failed') ORDER BY id"
        )
        finished: set[str] = set()
        for task_id, kind in rows:
            assert not (kind == "claimed" and task_id in finished), f"{task_id} claimed after finishing"
            if kind != "claimed":
                finished.add(task_id)


QueueMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMachine = QueueMachine.TestCase
