"""Path fuzzing: every value that names a stored thing, in a path or a body, against traversal shapes.

A real ``apiary serve`` process runs on ``<tmp>/home``. Beside it lies ``<tmp>/sentinel``, a folder
that looks like what apiary reads (a ``progress.db``, ``state.json``, checkpoints, ``tasks.json``,
an avatar), every file holding a secret string. Hypothesis throws values built from ``..``,
``%2e%2e``, ``/``, ``\\``, NUL, control characters, absolute paths, 300+ characters and unicode at
session ids, queen ids, colony names, ``agent_path``, worker session and checkpoint ids, trigger
ids, worker ids, task list ids and data-browser table names, in several URL encodings.

Every answer must be a 4xx JSON object with an ``error`` string (a value that is a legal name may
succeed where the route allows it, as long as what it names lies inside APIARY_HOME), and nothing
beside the home may be opened, read, created or changed: an inotify watch on the sentinel tree and
on the folder holding the home reports any access, and the tree is compared before and after.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import socket
import sqlite3
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiary.core.safety import COLONY_NAME, is_safe_segment
from apiary.sessions.profiles import PROFILES
from rawhttp import RawHttp, RawResponse
from serve_proc import ServeProc

SECRET = "SENTINEL-7f3a9c-DO-NOT-READ"
EXAMPLES = int(os.environ.get("APIARY_PATH_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
COUNT = {"requests": 0}


# -- inotify: who touched the sentinel ------------------------------------------------------------

IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x1, 0x2, 0x4, 0x8
IN_OPEN, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x20, 0x40, 0x80, 0x100, 0x200
ALL_EVENTS = IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_OPEN | IN_MOVED_FROM | IN_MOVED_TO \
    | IN_CREATE | IN_DELETE
CHANGES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB
IN_NONBLOCK = os.O_NONBLOCK


class Inotify:
    """A minimal inotify reader over ctypes (Linux). ``available`` is False where it cannot work."""

    def __init__(self) -> None:
        self.fd = -1
        self.paths: dict[int, Path] = {}
        try:
            self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            self.fd = self.libc.inotify_init1(IN_NONBLOCK)
        except (OSError, AttributeError):
            self.fd = -1

    @property
    def available(self) -> bool:
        return self.fd >= 0

    def watch(self, path: Path, mask: int) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.paths[wd] = path

    def read(self) -> list[tuple[Path, int, str]]:
        events: list[tuple[Path, int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16: offset + 16 + size].rstrip(b"\0").decode(errors="replace")
                events.append((self.paths.get(wd, Path("?")), mask, name))
                offset += 16 + size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under root: (mode, sha256 of a file / '' for a folder)."""
    found: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st_ = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            found[str(path.relative_to(root))] = (st_.st_mode, digest)
    return found


def make_sentinel(root: Path) -> None:
    """A folder shaped like a colony, a worker session and a queen folder, all holding SECRET."""
    for sub in ("data", "checkpoints", "sessions", "worker", "colonies/x/data", "skills/s"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for rel in ("state.json", "meta.json", "tasks.json", "index.json", "worker.json", "metadata.json",
                "tools.json", "triggers.json", "profile.json", "checkpoints/cp_x.json", "summary.json"):
        (root / rel).write_text(f'{{"secret": "{SECRET}", "status": "active", "tasks": []}}')
    (root / "skills/s/SKILL.md").write_text(f"---\nname: {SECRET}\n---\n")
    (root / "avatar.png").write_bytes(b"\x89PNG" + SECRET.encode())
    for db_path in (root / "data/progress.db", root / "colonies/x/data/progress.db"):
        with sqlite3.connect(db_path) as db:
            db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, goal TEXT, status TEXT)")
            db.execute("INSERT INTO tasks VALUES ('t1', ?, 'pending')", (SECRET,))
        db.close()


# -- the server and what exists on it -------------------------------------------------------------


@dataclass
class World:
    proc: ServeProc
    tmp: Path
    home: Path
    sentinel: Path
    client: httpx.Client
    raw: RawHttp
    queen_session: str = ""
    spawn_queen: str = ""
    colony_session: str = ""
    colony: str = "fuzzcolony"
    worker_session: str = ""
    checkpoint: str = ""
    watcher: Inotify = field(default_factory=Inotify)
    before: dict[str, tuple[int, str]] = field(default_factory=dict)
    parent_before: set[str] = field(default_factory=set)

    def start_watching(self) -> None:
        self.before = tree(self.sentinel)
        self.parent_before = set(os.listdir(self.tmp))
        folders = [self.sentinel] + [Path(d, n) for d, names, _ in os.walk(self.sentinel) for n in names]
        if self.watcher.available:
            self.watcher.watch(self.tmp, IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)
            for folder in folders:
                self.watcher.watch(folder, ALL_EVENTS)

    def assert_untouched(self) -> None:
        events = self.watcher.read() if self.watcher.available else []
        # the parent holds the server's log folder; only entries next to the home matter
        touched = [(str(p), hex(m), n) for p, m, n in events if p != self.tmp or n not in ("logs",)]
        assert not touched, f"something outside APIARY_HOME was touched: {touched[:10]}"
        assert set(os.listdir(self.tmp)) == self.parent_before, "something was created next to the home"
        assert tree(self.sentinel) == self.before, "the sentinel folder changed"
        if self.watcher.available:
            self.watcher.read()     # what tree() itself just opened
        assert self.proc.alive(), "the server died"

    def request(self, method: str, raw_path: str, json: Any = None, params: dict[str, str] | None = None
                ) -> RawResponse:
        """Sent byte for byte (httpx would drop ``%2E`` segments before sending)."""
        COUNT["requests"] += 1
        if params:
            raw_path += "?" + urlencode(params, quote_via=quote)
        return self.raw.request(method, raw_path, json_body=json)


def _wait_for_checkpoint(c: httpx.Client, sid: str) -> tuple[str, str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        items = c.get(f"/api/sessions/{sid}/worker-sessions").json().get("worker_sessions") or []
        if items and items[0].get("latest_checkpoint_id"):
            return str(items[0].get("session_id") or sid), str(items[0]["latest_checkpoint_id"])
        time.sleep(0.1)
    raise AssertionError("no checkpoint within 20 s")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("pathfuzz")
    home, sentinel = tmp / "home", tmp / "sentinel"
    make_sentinel(sentinel)
    proc = ServeProc(home=home, logs=tmp / "logs").start()
    client = httpx.Client(base_url=proc.url, timeout=15)
    w = World(proc, tmp, home, sentinel, client, RawHttp.for_url(proc.url))
    try:
        w.queen_session = client.post("/api/sessions", json={}).json()["session_id"]
        w.spawn_queen = client.post("/api/sessions", json={}).json()["session_id"]
        spawn = client.post(f"/api/sessions/{w.queen_session}/colony-spawn",
                            json={"colony_name": w.colony, "tasks": [{"goal": "one"}, {"goal": "two"}]})
        assert spawn.status_code == 200, spawn.text
        opened = client.post("/api/sessions", json={"agent_path": spawn.json()["colony_path"]})
        assert opened.status_code == 201, opened.text
        w.colony_session = opened.json()["session_id"]
        assert client.post(f"/api/sessions/{w.colony_session}/trigger", json={}).status_code == 200
        w.worker_session, w.checkpoint = _wait_for_checkpoint(client, w.colony_session)
        w.start_watching()
        yield w
        print(f"\npath fuzz: {COUNT['requests']} requests")
    finally:
        client.close()
        w.raw.close()
        proc.stop()
        proc.cleanup()
        w.watcher.close()


# -- the values ----------------------------------------------------------------------------------

PIECES = ["..", ".", "/", "\\", "%2e%2e", "%2f", "%5c", "%00", "\x00", "\x01", "\x1f", "\x7f", "\n", "\r\n", "\t",
          "sentinel", "etc", "passwd", "~", "a", "fuzzcolony", "queen_technology", "data", "progress.db",
          "state.json", "ü", "日本", "😀", "\u202e", "\ufeff", "\u2025", "\uff0e\uff0e", "%c0%ae", " ", "NUL",
          "con", ":", "*", "?", "#", "colony:", "session:"]


def traversal_values(sentinel: Path) -> st.SearchStrategy[str]:
    absolute = [str(sentinel), str(sentinel / "data"), "/etc/passwd", "/", "/tmp", "//", "\\\\server\\share",
                "C:\\Windows"]
    relative = ["../sentinel", "../../sentinel", "../../../sentinel", "../../../../sentinel",
                "..\\..\\sentinel", "....//....//sentinel", "..%2f..%2fsentinel", "%2e%2e%2f%2e%2e%2fsentinel",
                "a..b", "..a", "a..", "...", "./.", "x/../..", "fuzzcolony/../../../sentinel"]
    joined = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)
    long = st.integers(256, 600).map(lambda n: "x" * n) | st.integers(60, 200).map(lambda n: "../" * n)
    return st.one_of(st.sampled_from(absolute + relative), joined, long,
                     st.text(min_size=0, max_size=40), st.text(alphabet="./\\%2ef", max_size=20))


def path_values(sentinel: Path) -> st.SearchStrategy[tuple[str, str]]:
    """A value and its form on the wire (percent-encoded once, with dots encoded, or twice)."""
    def encode(pair: tuple[str, str]) -> tuple[str, str]:
        value, how = pair
        once = quote(value, safe="")
        wire = {"once": once, "dots": once.replace(".", "%2E"), "twice": quote(once, safe="")}[how]
        return value, wire
    values = traversal_values(sentinel).filter(lambda v: v not in ("history",))
    return st.tuples(values, st.sampled_from(["once", "dots", "twice"])).map(encode)


# -- the checks -----------------------------------------------------------------------------------


def check_refused(resp: RawResponse | httpx.Response, allowed: tuple[int, ...] = (400, 404)) -> None:
    where = describe(resp)
    assert resp.status_code in allowed, f"{where}: {resp.status_code} {resp.text[:300]}"
    check_clean(resp, where)
    assert resp.headers.get("content-type", "").startswith("application/json"), where
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), f"{where}: {body!r}"


def describe(resp: RawResponse | httpx.Response) -> str:
    if isinstance(resp, RawResponse):
        return f"{resp.method} {resp.path!r}"
    return f"{resp.request.method} {resp.request.url.raw_path!r}"


def check_answer(resp: RawResponse, legal: bool, allowed: tuple[int, ...] = (400, 404, 405)) -> None:
    """Refused, or (for a value that is a legal name of something that exists) answered cleanly."""
    if 200 <= resp.status_code < 300:
        assert legal, f"{describe(resp)}: {resp.status_code} for a value that names nothing: {resp.text[:300]}"
        check_clean(resp, describe(resp))
    else:
        check_refused(resp, allowed)


def check_clean(resp: RawResponse | httpx.Response, where: str = "") -> None:
    text = resp.text
    assert SECRET not in text, f"{where}: the response shows the sentinel's content"
    assert "root:x:0:0" not in text, f"{where}: the response shows /etc/passwd"
    assert resp.status_code < 500, f"{where}: {resp.status_code} {text[:300]}"


def inside(home: Path, path: Path) -> bool:
    resolved = path.resolve()
    return resolved == home.resolve() or home.resolve() in resolved.parents


# -- the tests ------------------------------------------------------------------------------------


# The strategies need the sentinel's absolute path, known once the module's server runs: deferred.
_SENTINEL: list[Path] = [Path("/nonexistent-sentinel")]


def fuzzed_path() -> st.SearchStrategy[tuple[str, str]]:
    return st.deferred(lambda: path_values(_SENTINEL[0]))


def fuzzed_value() -> st.SearchStrategy[str]:
    return st.deferred(lambda: traversal_values(_SENTINEL[0]))


@pytest.fixture(scope="module", autouse=True)
def _bind_sentinel(world: World) -> None:
    _SENTINEL[0] = world.sentinel


@FUZZ
@given(pair=fuzzed_path())
def test_session_ids_in_paths(world: World, pair: tuple[str, str]) -> None:
    _, v = pair
    # an unknown id has an empty history, as in Hive (SPEC A 3.3)
    resp = world.request("GET", f"/api/sessions/{v}/events/history")
    check_clean(resp)
    if resp.status_code == 200:
        assert (resp.json()["events"], resp.json()["total"]) == ([], 0), resp.text[:300]
    else:
        check_refused(resp, (400, 404, 405))
    for method, path, body in [("GET", f"/api/sessions/{v}", None),
                               ("POST", f"/api/sessions/{v}/chat", {"message": "x"}),
                               ("GET", f"/api/sessions/{v}/worker-sessions", None),
                               ("GET", f"/api/sessions/{v}/usage", None),
                               ("POST", f"/api/sessions/{v}/colony", {"agent_path": "fuzzcolony"}),
                               ("DELETE", f"/api/sessions/history/{v}", None), ("DELETE", f"/api/sessions/{v}", None),
                               ("GET", f"/api/sessions/{v}/events", None)]:
        check_refused(world.request(method, path, json=body), (400, 404, 405))


@FUZZ
@given(pair=fuzzed_path())
def test_queen_ids(world: World, pair: tuple[str, str]) -> None:
    value, v = pair
    legal = value in {p.id for p in PROFILES}
    for method, path, body in [("POST", f"/api/queen/{v}/session", {}), ("POST", f"/api/queen/{v}/session/new", {}),
                               ("POST", f"/api/queen/{v}/session/select", {"session_id": world.queen_session}),
                               ("GET", f"/api/queen/{v}/avatar", None), ("GET", f"/api/queen/{v}/skills", None),
                               ("GET", f"/api/queen/{v}/tools", None)]:
        check_answer(world.request(method, path, json=body), legal)


@FUZZ
@given(pair=fuzzed_path())
def test_colony_names_in_paths(world: World, pair: tuple[str, str]) -> None:
    value, v = pair
    legal = is_safe_segment(value) and bool(COLONY_NAME.match(value)) \
        and (world.home / "colonies" / value / "data" / "progress.db").is_file()
    for path in (f"/api/colonies/{v}/progress/snapshot", f"/api/colonies/{v}/data/tables",
                 f"/api/colonies/{v}/data/tables/tasks/rows", f"/api/colonies/{v}/progress/stream"):
        check_answer(world.request("GET", path), legal)


@FUZZ
@given(value=fuzzed_value())
def test_agent_path_bodies(world: World, value: str) -> None:
    colonies = world.home / "colonies"
    target = Path(value).expanduser() if "\x00" not in value else None
    resolved = None
    if target is not None:
        try:
            resolved = target if target.is_absolute() else colonies / target
            legal = inside(colonies, resolved) and resolved.resolve() != colonies.resolve()
        except (OSError, ValueError):
            legal = False
    else:
        legal = False
    for method, path, body in [("POST", "/api/sessions", {"agent_path": value}),
                               ("POST", f"/api/sessions/{world.spawn_queen}/colony", {"agent_path": value})]:
        resp = world.request(method, path, json=body)
        if resp.status_code in (200, 201):
            assert legal and resolved is not None, f"{method} {path} {value!r} opened something: {resp.text[:300]}"
            check_clean(resp)
            if method == "POST" and path.endswith("/colony"):
                world.client.delete(f"/api/sessions/{world.spawn_queen}/colony")
        else:
            check_refused(resp, (400, 404, 409))
    # deleting is tried only on values that do not name the fuzzed colony itself
    if not (legal and resolved is not None and resolved.resolve().name == world.colony):
        resp = world.request("DELETE", "/api/agents", json={"agent_path": value})
        if resp.status_code == 200:
            assert legal, f"DELETE /api/agents {value!r} deleted something: {resp.text[:300]}"
        else:
            check_refused(resp)


@FUZZ
@given(pair=fuzzed_path(), raw=fuzzed_value())
def test_worker_session_and_checkpoint_ids(world: World, pair: tuple[str, str], raw: str) -> None:
    _, v = pair
    sid, ws, cp = world.colony_session, world.worker_session, world.checkpoint
    resp = world.request("GET", f"/api/sessions/{sid}/worker-sessions/{v}/checkpoints")
    check_refused(resp, (400, 404, 405))
    for route in ("resume", "replay"):
        for body in ({"session_id": raw, "checkpoint_id": cp}, {"session_id": ws, "checkpoint_id": raw},
                     {"session_id": raw, "checkpoint_id": raw, "mode": "recorded"}):
            if raw in (ws, cp):
                continue
            check_refused(world.request("POST", f"/api/sessions/{sid}/{route}", json=body))
    body = {"session_state": {"resume_session_id": raw}}
    if not is_safe_segment(raw):
        check_refused(world.request("POST", f"/api/sessions/{sid}/trigger", json=body))


@FUZZ
@given(pair=fuzzed_path())
def test_trigger_and_worker_ids(world: World, pair: tuple[str, str]) -> None:
    _, v = pair
    sid = world.colony_session
    for method, path, body in [("PATCH", f"/api/sessions/{sid}/triggers/{v}", {"task": "x"}),
                               ("POST", f"/api/sessions/{sid}/triggers/{v}/activate", None),
                               ("POST", f"/api/sessions/{sid}/triggers/{v}/deactivate", None),
                               ("POST", f"/api/sessions/{sid}/triggers/{v}/run", None),
                               ("POST", f"/api/sessions/{sid}/workers/{v}/stop", None)]:
        check_refused(world.request(method, path, json=body), (400, 404, 405))


@FUZZ
@given(pair=fuzzed_path(), raw=fuzzed_value())
def test_task_list_ids_and_table_names(world: World, pair: tuple[str, str], raw: str) -> None:
    _, v = pair
    for prefix in ("", "colony:", "session:queen:", "session:", "colony:fuzzcolony/"):
        check_refused(world.request("GET", f"/api/tasks/{quote(prefix, safe=':')}{v}"), (400, 404, 405))
    resp = world.request("GET", f"/api/colonies/{world.colony}/data/tables/{v}/rows")
    check_refused(resp, (400, 404, 405))
    resp = world.request("GET", f"/api/colonies/{world.colony}/data/tables/tasks/rows", params={"order_by": raw})
    if resp.status_code == 200:
        check_clean(resp)       # an order_by naming a real column is fine
    else:
        check_refused(resp)


@FUZZ
@given(value=fuzzed_value())
def test_names_in_bodies(world: World, value: str) -> None:
    resp = world.request("POST", "/api/sessions", json={"session_id": value})
    if resp.status_code == 201:
        assert is_safe_segment(value), f"session_id {value!r} was accepted"
        assert (world.home / "agents").is_dir()
        world.client.delete(f"/api/sessions/{quote(value, safe='')}")
    else:
        check_refused(resp, (400, 409))
    resp = world.request("POST", "/api/sessions", json={"queen_resume_from": value})
    check_answer(resp, is_safe_segment(value), (400, 404, 409))   # a session created above may be resumed
    if resp.status_code == 201:
        world.client.delete(f"/api/sessions/{quote(resp.json()['session_id'], safe='')}")
    check_refused(world.request("POST", "/api/sessions", json={"queen_name": value}), (400, 404))
    resp = world.request("POST", f"/api/sessions/{world.spawn_queen}/colony-spawn", json={"colony_name": value})
    if resp.status_code == 200:
        assert COLONY_NAME.match(value.strip()) and is_safe_segment(value.strip()), value
        assert inside(world.home, Path(resp.json()["colony_path"]))
    else:
        check_refused(resp, (400, 409))


def test_literal_dot_segments_on_a_raw_socket(world: World) -> None:
    """Paths a client library would normalise away, sent byte for byte."""
    port = int(world.proc.url.rsplit(":", 1)[1])
    paths = [b"/api/sessions/../../etc/passwd", b"/api/colonies/../../sentinel/progress/snapshot",
             b"/api/colonies/..%2F..%2Fsentinel/progress/snapshot", b"/api/queen/../../sentinel/avatar",
             b"/api/tasks/colony:../../sentinel", b"/api/sessions/./chat", b"/api/sessions/%2e/chat",
             b"/api/colonies/fuzzcolony/data/tables/../../../../sentinel/rows", b"/api/../../sentinel/state.json",
             b"/../sentinel/state.json", b"/%2e%2e/sentinel/state.json", b"/static/..%2f..%2f..%2fsentinel/meta.json"]
    for raw_path in paths:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET " + raw_path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert SECRET.encode() not in body and b"root:x:0:0" not in body, raw_path
        if raw_path.startswith(b"/api/"):
            assert status in (400, 404, 405), (raw_path, head[:200])
            assert b'"error"' in body, (raw_path, body[:200])
        else:
            assert status in (200, 404), (raw_path, head[:200])   # the web UI's index.html, never a file
    world.assert_untouched()


@pytest.fixture(autouse=True)
def _untouched_after_each_test(world: World) -> Iterator[None]:
    yield
    world.assert_untouched()
