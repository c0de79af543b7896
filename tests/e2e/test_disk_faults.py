"""Disk faults: a read-only APIARY_HOME and a full disk, on real mounts.

The tests run as root in CI, where ``chmod 0555`` does not stop a write, so a read-only home is a
tmpfs mounted ``ro`` (or remounted ``ro`` after the server wrote to it), and a full disk is a small
tmpfs filled up with a filler file. Without the right to mount (not root, or no CAP_SYS_ADMIN) the
mount tests are skipped and the chmod variant runs instead.

What must hold:
- a server that cannot use its home says so and exits promptly, naming the folder; never a hang;
- with the disk full, every request gets an answer within its timeout, a JSON object with an
  ``error`` string where it fails, and the server stays up;
- once space is back (or the mount is writable again) the same home works: a restart succeeds, the
  event logs are 1..N, the conversations well-formed, the history reads back.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from crashloop import Report, check_conversations, check_events
from serve_proc import ServeProc, ServerFailedToStart

pytestmark = pytest.mark.e2e
REFUSE_WITHIN_S = 15.0
GENERIC_500 = "Internal server error"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=20)


def can_mount(tmp: Path) -> bool:
    probe = tmp / "mount-probe"
    probe.mkdir(exist_ok=True)
    if os.geteuid() != 0 or _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)).returncode != 0:
        return False
    subprocess.run(["umount", str(probe)], capture_output=True, timeout=20)
    return True


class Tmpfs:
    """A tmpfs at ``path``; unmounted (lazily if busy) at the end."""

    def __init__(self, path: Path, size: str, *, read_only: bool = False) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (",ro" if read_only else "")
        result = _mount("-t", "tmpfs", "-o", opts, "tmpfs", str(path))
        assert result.returncode == 0, result.stderr

    def remount(self, opts: str) -> None:
        result = _mount("-o", f"remount,{opts}", str(self.path))
        assert result.returncode == 0, result.stderr

    def umount(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True, timeout=20).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=20)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Tmpfs]]:
    if not can_mount(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    made: list[Tmpfs] = []
    yield made
    for m in made:
        m.umount()


def check_home(home: Path) -> Report:
    report = Report(seed=0, rounds=0)
    db = sqlite3.connect(home / "apiary.db")
    try:
        check_events(db, report, {})
        check_conversations(db, report)
    finally:
        db.close()
    return report


def seed_home(proc: ServeProc) -> str:
    """A session with a finished chat turn; returns its id."""
    with httpx.Client(base_url=proc.url, timeout=20) as c:
        sid = c.post("/api/sessions", json={}).json()["session_id"]
        after = c.post(f"/api/sessions/{sid}/chat", json={"message": "demo:tool list_directory {}"}).json()["after_seq"]
        wait_for(c, sid, "client_input_requested", after)
    return sid


def wait_for(c: httpx.Client, sid: str, event_type: str, after: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = c.get(f"/api/sessions/{sid}/events/history", params={"after": str(after)}).json()["events"]
        if any(e["type"] == event_type for e in events):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {event_type} after {after} within {timeout} s")


def start_refused(proc: ServeProc) -> ServerFailedToStart:
    began = time.monotonic()
    try:
        proc.start(timeout=REFUSE_WITHIN_S)
    except ServerFailedToStart as exc:
        failure = exc
    else:
        proc.cleanup()
        pytest.fail(f"the server started on a home it cannot write: {proc.url}")
    finally:
        proc.cleanup()      # never leave a process behind, whatever happened
    elapsed = time.monotonic() - began
    # a process that had to be killed by our timeout hung instead of exiting
    assert failure.returncode not in (None, -9), (
        f"the server neither started nor exited within {REFUSE_WITHIN_S} s (killed after {elapsed:.1f} s); "
        f"stderr: {failure.stderr[-1500:]}")
    assert failure.returncode != 0
    return failure


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- a read-only home ------------------------------------------------------------------------------


def test_an_empty_read_only_home_refuses_promptly_naming_the_folder(tmp_path: Path, mounts: list[Tmpfs]) -> None:
    mounts.append(Tmpfs(tmp_path / "ro", "4m", read_only=True))
    proc = ServeProc(home=tmp_path / "ro" / "home", logs=tmp_path / "logs")
    failure = start_refused(proc)
    assert str(tmp_path / "ro" / "home") in failure.stderr, failure.stderr[-1500:]


def test_an_empty_read_only_home_is_refused_in_one_clear_line(tmp_path: Path, mounts: list[Tmpfs]) -> None:
    """Found by this suite: today the refusal is a Python traceback ending in
    ``OSError: [Errno 30] Read-only file system: '<home>'`` instead of a one-line message."""
    mounts.append(Tmpfs(tmp_path / "ro", "4m", read_only=True))
    proc = ServeProc(home=tmp_path / "ro" / "home", logs=tmp_path / "logs")
    failure = start_refused(proc)
    assert "Traceback" not in failure.stderr, failure.stderr[-1500:]
    assert str(tmp_path / "ro" / "home") in last_line(failure.stderr), failure.stderr[-500:]


def test_a_home_that_became_read_only_refuses_then_works_again(tmp_path: Path, mounts: list[Tmpfs]) -> None:
    """Found by this suite: today the server prints ``sqlite3.OperationalError: unable to open database
    file`` and then never exits (the SQLite connection's worker thread is left running), so a
    supervisor waits forever."""
    fs = Tmpfs(tmp_path / "fs", "16m")
    mounts.append(fs)
    home = fs.path / "home"
    proc = ServeProc(home=home, logs=tmp_path / "logs").start()
    try:
        sid = seed_home(proc)
        assert proc.stop() == 0
        before = check_home(home)
        fs.remount("ro")
        failure = start_refused(proc)
        assert str(home) in failure.stderr, failure.stderr[-1500:]
        fs.remount("rw")
        proc.start()
        with httpx.Client(base_url=proc.url, timeout=20) as c:
            history = c.get(f"/api/sessions/{sid}/events/history", params={"limit": "10000"}).json()["events"]
            assert history and history[-1]["type"] == "client_input_requested"
            after = c.post(f"/api/sessions/{sid}/chat", json={"message": "back again"}).json()["after_seq"]
            wait_for(c, sid, "client_input_requested", after)
        assert proc.stop() == 0
    finally:
        proc.cleanup()
    report = check_home(home)
    assert report.problems == [], report.problems
    assert report.events_checked > before.events_checked


def test_chmod_0555_home(tmp_path: Path) -> None:
    """Where chmod stops writes (not root), a 0555 home must be refused like a read-only mount."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    try:
        try:
            (home / "probe").write_text("x")
            writable = True
            (home / "probe").unlink()
        except PermissionError:
            writable = False
        if writable:
            pytest.skip("running as root: chmod 0555 does not stop writes (the read-only mount tests cover it)")
        failure = start_refused(ServeProc(home=home, logs=tmp_path / "logs"))
        assert str(home) in failure.stderr, failure.stderr[-1500:]
    finally:
        home.chmod(0o755)


# -- a full disk ---------------------------------------------------------------------------------


@dataclass
class FullDisk:
    answers: list[tuple[str, int, str]] = field(default_factory=list)   # (what, status, error or "")
    hung: list[str] = field(default_factory=list)
    not_json: list[str] = field(default_factory=list)
    alive_while_full: bool = False
    after_free: list[tuple[str, int]] = field(default_factory=list)
    restart_ok: bool = False
    report: Report | None = None
    history_ok: bool = False


def fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullDisk]:
    tmp = tmp_path_factory.mktemp("diskfull")
    if not can_mount(tmp):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    fs = Tmpfs(tmp / "fs", "16m")
    home = fs.path / "home"
    proc = ServeProc(home=home, logs=tmp / "logs").start()
    out = FullDisk()
    try:
        sid = seed_home(proc)
        c = httpx.Client(base_url=proc.url, timeout=20)
        queen = c.post("/api/sessions", json={}).json()["session_id"]
        spawn = c.post(f"/api/sessions/{queen}/colony-spawn",
                       json={"colony_name": "full", "tasks": [{"goal": f"demo:delay 20\nitem {i}"} for i in range(3)]})
        colony = c.post("/api/sessions", json={"agent_path": spawn.json()["colony_path"]}).json()["session_id"]
        filler = fill(fs.path)
        attempts = [
            ("chat", "POST", f"/api/sessions/{sid}/chat", {"message": "x" * 50_000}),
            ("chat small", "POST", f"/api/sessions/{sid}/chat", {"message": "are you there"}),
            ("create session", "POST", "/api/sessions", {}),
            ("trigger", "POST", f"/api/sessions/{colony}/trigger", {}),
            ("colony spawn", "POST", f"/api/sessions/{queen}/colony-spawn",
             {"colony_name": "full_two", "tasks": [{"goal": "a"}]}),
            ("mark spawned", "POST", f"/api/sessions/{queen}/mark-colony-spawned", {"colony_name": "z"}),
            ("compact and fork", "POST", f"/api/sessions/{sid}/compact-and-fork", None),
            ("history", "GET", f"/api/sessions/{sid}/events/history", None),
            ("snapshot", "GET", "/api/colonies/full/progress/snapshot", None),
            ("health", "GET", "/api/health", None),
        ]
        for what, method, path, body in attempts:
            try:
                resp = c.request(method, path, json=body)
            except httpx.TimeoutException:
                out.hung.append(what)
                continue
            error = ""
            try:
                parsed = resp.json()
                error = parsed.get("error", "") if isinstance(parsed, dict) else ""
            except ValueError:
                out.not_json.append(what)
            out.answers.append((what, resp.status_code, str(error)))
        time.sleep(1.0)
        out.alive_while_full = proc.alive() and c.get("/api/health").status_code in (200, 503)
        filler.unlink()
        time.sleep(0.5)
        after = c.post(f"/api/sessions/{sid}/chat", json={"message": "space is back"})
        out.after_free.append(("chat", after.status_code))
        if after.status_code == 200:
            wait_for(c, sid, "client_input_requested", after.json()["after_seq"])
        out.after_free.append(("trigger", c.post(f"/api/sessions/{colony}/trigger", json={}).status_code))
        time.sleep(1.0)
        c.close()
        assert proc.stop() == 0
        proc.start()
        with httpx.Client(base_url=proc.url, timeout=20) as c2:
            out.restart_ok = c2.get("/api/health").json()["status"] == "ok"
            events = c2.get(f"/api/sessions/{sid}/events/history", params={"limit": "10000"}).json()["events"]
            ids = [e["id"] for e in events]
            out.history_ok = bool(ids) and ids == sorted(set(ids))
        assert proc.stop() == 0
        out.report = check_home(home)
        yield out
    finally:
        proc.cleanup()
        fs.umount()


def test_a_full_disk_answers_every_request_and_recovers(full_disk: FullDisk) -> None:
    assert full_disk.hung == [], f"no answer within 20 s: {full_disk.hung}"
    assert full_disk.not_json == [], f"answers that are not JSON: {full_disk.not_json}"
    for what, status, error in full_disk.answers:
        if status >= 400:
            assert error, f"{what}: {status} without an error string"
    assert full_disk.alive_while_full
    assert full_disk.after_free == [("chat", 200), ("trigger", 200)], full_disk.after_free
    assert full_disk.restart_ok and full_disk.history_ok
    assert full_disk.report is not None and full_disk.report.problems == [], full_disk.report.problems


def test_a_full_disk_is_named_in_the_error(full_disk: FullDisk) -> None:
    """Found by this suite: today most writes on a full disk answer 500 ``Internal server error`` (the
    cause, ``database or disk is full`` / ``No space left on device``, is in the log only); a client
    should be told what is wrong (e.g. 507 ``{"error": "Insufficient storage: ..."}``)."""
    generic = [(what, status) for what, status, error in full_disk.answers if error == GENERIC_500]
    assert generic == [], f"generic 500s on a full disk: {generic}"
