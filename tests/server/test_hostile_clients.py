"""Hostile clients against a real ``apiary serve`` process: oversized bodies and images, deeply nested
JSON, invalid UTF-8, slowloris-style slow senders, idle and abandoned connections, huge headers and
URLs. Every API answer is a 4xx JSON object (413 for a body over the limit), never a 500, and the
server stays up and keeps serving a normal client. Every test is bounded to a few seconds.

Requests the HTTP parser itself refuses (a 100 KB header line, a raw NUL in the request line, a
conflicting ``Content-Length`` + ``Transfer-Encoding``) are answered by aiohttp before apiary sees
them: plain-text 400s, which these tests accept as long as the status is a 4xx and the server lives.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rawhttp import RawHttp
from serve_proc import ServeProc

LIMIT = 16 * 1024 * 1024           # the default body limit (SPEC A 1.1)


@dataclass
class Target:
    proc: ServeProc
    client: httpx.Client
    queen: str
    colony_session: str

    @property
    def port(self) -> int:
        return int(self.proc.url.rsplit(":", 1)[1])

    def healthy(self) -> None:
        assert self.proc.alive(), "the server died"
        resp = self.client.get("/api/health")
        assert resp.status_code == 200 and resp.json()["status"] == "ok", resp.text


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile")
    proc = ServeProc(home=tmp / "home", logs=tmp / "logs").start()
    client = httpx.Client(base_url=proc.url, timeout=20)
    try:
        queen = client.post("/api/sessions", json={}).json()["session_id"]
        other = client.post("/api/sessions", json={}).json()["session_id"]
        spawn = client.post(f"/api/sessions/{other}/colony-spawn", json={"colony_name": "hostile", "tasks": []})
        assert spawn.status_code == 200, spawn.text
        opened = client.post("/api/sessions", json={"agent_path": spawn.json()["colony_path"]})
        assert opened.status_code == 201, opened.text
        yield Target(proc, client, queen, opened.json()["session_id"])
    finally:
        client.close()
        proc.stop()
        proc.cleanup()


def assert_error(resp: httpx.Response, status: int, text: str | None = None) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body.get("error"), str), body
    if text is not None:
        assert body["error"] == text, body


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection, then read until the server closes or ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -- oversized bodies ------------------------------------------------------------------------------


def test_a_body_over_the_limit_gets_413_json(target: Target) -> None:
    big = json.dumps({"initial_prompt": "x" * (LIMIT + 1024)}).encode()
    assert_error(target.client.post("/api/sessions", content=big), 413, "Request body too large")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * (LIMIT + 1)}}
    resp = target.client.post(f"/api/sessions/{target.queen}/chat", json={"message": "look", "images": [image]})
    assert_error(resp, 413, "Request body too large")
    target.healthy()


def test_a_chunked_body_over_the_limit_gets_413_json(target: Target) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"message": "'
        for _ in range(17):
            yield b"y" * (1024 * 1024)
        yield b'"}'

    resp = target.client.post(f"/api/sessions/{target.queen}/chat", content=chunks())
    assert_error(resp, 413, "Request body too large")
    target.healthy()


def test_an_image_just_under_the_limit_is_accepted(target: Target) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * (4 * 1024 * 1024)}}
    resp = target.client.post(f"/api/sessions/{target.queen}/chat", json={"message": "look", "images": [image]})
    assert resp.status_code == 200, resp.text[:300]
    target.healthy()


def test_a_lying_content_length_does_not_hang_the_server(target: Target) -> None:
    """Content-Length of a terabyte, 100 bytes sent, then the client goes away."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
        sock.sendall(f"POST /api/sessions/{target.queen}/chat HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {10**12}\r\n\r\n".encode() + b"{" * 100)
        time.sleep(0.3)
    target.healthy()


# -- malformed JSON --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b'{"a":' * 100_000,
    b'{"message": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"message": "x", "images": [' + b"{" * 200_000,
], ids=["100k-brackets", "100k-objects", "balanced-50k", "200k-braces-in-images"])
def test_deeply_nested_json_is_a_400(target: Target, body: bytes) -> None:
    for path in ("/api/sessions", f"/api/sessions/{target.queen}/chat",
                 f"/api/sessions/{target.colony_session}/trigger", "/api/messages/classify"):
        assert_error(target.client.post(path, content=body), 400, "Invalid JSON body")
    target.healthy()


def nested(depth: int) -> dict[str, object]:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": [value]}
    return {"deep": value}


@pytest.mark.parametrize("depth", [100, 400])
def test_nesting_that_parses_is_never_a_500(target: Target, depth: int) -> None:
    """Valid, deep JSON in fields that are stored (trigger input, replay body, session_state)."""
    deep = nested(depth)
    for path, body in [(f"/api/sessions/{target.colony_session}/trigger", {"input_data": deep}),
                       (f"/api/sessions/{target.colony_session}/trigger", {"session_state": deep}),
                       (f"/api/sessions/{target.queen}/chat", {"message": "hi", "images": [deep]}),
                       ("/api/sessions", {"initial_prompt": "hi", "extra": deep})]:
        resp = target.client.post(path, content=json.dumps(body).encode())
        assert resp.status_code < 500, (path, resp.status_code, resp.text[:300])
        assert resp.headers["content-type"].startswith("application/json")
    target.client.post(f"/api/sessions/{target.colony_session}/pause")
    target.healthy()


@pytest.mark.parametrize("body", [
    b'{"message": "\xff\xfe"}', b'{"message": "\xc0\xaf"}', b'{"message": "\xed\xa0\x80"}', b"\xff{}",
    b'{"message": "ok\x80"}', b'{"\xfe": 1}', b'{"message": "\\ud800"}', b'{"message": "a\\udfffb"}',
    b'{"\\udc00": "key"}',
], ids=["ff-fe", "overlong-slash", "utf8-surrogate", "leading-ff", "stray-continuation", "bad-key",
        "escaped-lone-high-surrogate", "escaped-lone-low-surrogate", "escaped-surrogate-key"])
def test_invalid_utf8_or_lone_surrogates_are_a_400(target: Target, body: bytes) -> None:
    for path in ("/api/sessions", f"/api/sessions/{target.queen}/chat", f"/api/sessions/{target.queen}/queen-context",
                 "/api/messages/classify", "/api/queen/queen_technology/session/select"):
        assert_error(target.client.post(path, content=body), 400, "Invalid JSON body")
    target.healthy()


def test_a_surrogate_pair_is_fine(target: Target) -> None:
    resp = target.client.post(f"/api/sessions/{target.queen}/chat", content=b'{"message": "smile \\ud83d\\ude00"}')
    assert resp.status_code == 200, resp.text
    target.healthy()


# -- slow, idle and abandoned connections ---------------------------------------------------------


class SlowSender(threading.Thread):
    """Sends ``data`` one byte every ``interval`` seconds until done or stopped."""

    def __init__(self, port: int, data: bytes, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.data, self.interval = port, data, interval
        self.stop = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                for byte in self.data:
                    if self.stop.wait(self.interval):
                        return
                    sock.sendall(bytes([byte]))
                    self.sent += 1
        except OSError as exc:          # the server may close a slow client: that is allowed
            self.error = exc


def test_slowloris_does_not_starve_a_normal_client(target: Target) -> None:
    head = f"GET /api/sessions/{target.queen} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + "z" * 200
    slow = [SlowSender(target.port, head.encode(), 0.2) for _ in range(30)]
    body_slow = [SlowSender(target.port, (f"POST /api/sessions/{target.queen}/chat HTTP/1.1\r\nHost: x\r\n"
                                           "Content-Length: 500\r\n\r\n" + "{" * 500).encode(), 0.2)
                 for _ in range(10)]
    for t in slow + body_slow:
        t.start()
    answered = []
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            resp = target.client.get("/api/health", timeout=5)
            answered.append(resp.status_code)
            time.sleep(0.05)
    finally:
        for t in slow + body_slow:
            t.stop.set()
        for t in slow + body_slow:
            t.join(5)
    assert len(answered) >= 20 and set(answered) == {200}, answered
    assert all(t.sent > 5 for t in slow), [t.sent for t in slow]   # they really were trickling bytes
    target.healthy()


def test_many_idle_connections_do_not_block_the_server(target: Target) -> None:
    socks = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", target.port), timeout=5))
        for _ in range(20):
            assert target.client.get(f"/api/sessions/{target.queen}").status_code == 200
    finally:
        for s in socks:
            s.close()
    target.healthy()


def test_clients_that_vanish_mid_request_and_mid_stream(target: Target) -> None:
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
            sock.sendall(f"POST /api/sessions/{target.queen}/chat HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 50\r\n\r\n{\"mess".encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST on close
    for path in (f"/api/sessions/{target.queen}/events", f"/api/sessions/{target.colony_session}/workers/stream",
                 "/api/colonies/hostile/progress/stream", "/api/browser/status/stream"):
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n\r\n".encode())
                assert sock.recv(1024).startswith(b"HTTP/1.1 200")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    target.healthy()
    # the queen still answers after all that
    resp = target.client.post(f"/api/sessions/{target.queen}/chat", json={"message": "still with me?"})
    assert resp.status_code == 200, resp.text


# -- what the HTTP parser refuses ------------------------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 100_000 + b"\r\n\r\n",
    b"GET /api/sessions/" + b"u" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"\r\n",
    b"GET /api/sessions/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),       # a TLS ClientHello
], ids=["100k-header", "100k-url", "2000-headers", "nul-in-path", "cl-and-te", "garbage", "tls-hello"])
def test_requests_the_parser_refuses_get_a_4xx_and_the_server_lives(target: Target, request_bytes: bytes) -> None:
    answer = raw_exchange(target.port, request_bytes)
    if answer:                                # closing without a word is also acceptable
        assert 400 <= status_of(answer) < 500, answer[:200]
    target.healthy()


def test_a_keep_alive_connection_survives_a_refused_body(target: Target) -> None:
    raw = RawHttp.for_url(target.proc.url)
    try:
        assert raw.request("POST", "/api/sessions", b"[" * 100_000).status == 400
        assert raw.request("GET", "/api/health").status == 200
        assert raw.request("POST", "/api/messages/classify", b'{"message": "\xff"}').status == 400
        assert raw.request("GET", f"/api/sessions/{target.queen}").status == 200
    finally:
        raw.close()


# -- a hostile workspace ----------------------------------------------------------------------------


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)


def unexpected_tracebacks(stderr: str) -> list[str]:
    """Log records with a traceback, except aiohttp's own report of a request its parser refused
    (``aiohttp.server: Error handling request`` + ``aiohttp.http_exceptions.*``)."""
    starts = [m.start() for m in LOG_RECORD.finditer(stderr)] + [len(stderr)]
    records = [stderr[a:b] for a, b in itertools.pairwise(starts)]
    return [r for r in records if "Traceback" in r
            and not (" aiohttp.server: Error handling request" in r and "aiohttp.http_exceptions." in r)]


def test_the_server_logged_no_traceback(target: Target) -> None:
    """Runs after the tests above (file order): nothing they sent reached an unexpected exception."""
    target.healthy()
    found = unexpected_tracebacks(target.proc.stderr())
    assert not found, "\n".join(found)[-4000:]


def test_a_file_name_that_is_not_utf8_does_not_kill_the_queen(tmp_path: Path) -> None:
    """A tool result holding an undecodable file name (``os.listdir`` gives it as a lone surrogate)
    must reach the conversation and the queen must finish her turn and wait again.

    Found by this suite: the store refused the surrogate (UnicodeEncodeError), the queen's loop ended
    with an error, the client saw ``tool_call_started`` and then nothing, and the next chat answered
    ``queen_revived``. Tool results are now made storable before they are stored.
    """
    proc = ServeProc(home=tmp_path / "home", logs=tmp_path / "logs").start()
    try:
        _queen_survives_an_undecodable_file_name(proc)
    finally:
        proc.stop()
        proc.cleanup()


def _queen_survives_an_undecodable_file_name(proc: ServeProc) -> None:
    c = httpx.Client(base_url=proc.url, timeout=20)
    sid = c.post("/api/sessions", json={}).json()["session_id"]
    home = proc.home
    workspaces = [p for p in home.glob(f"agents/queens/*/sessions/{sid}") if p.is_dir()]
    assert workspaces, "no session folder"
    workspace = workspaces[0] / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    Path(os.fsdecode(os.path.join(os.fsencode(workspace), b"bad\xffname.txt"))).write_bytes(b"x")
    after = c.post(f"/api/sessions/{sid}/chat", json={"message": "demo:tool list_directory {}"}).json()["after_seq"]
    deadline = time.monotonic() + 10
    types: list[str] = []
    while time.monotonic() < deadline:
        events = c.get(f"/api/sessions/{sid}/events/history", params={"after": str(after)}).json()["events"]
        types = [e["type"] for e in events]
        if "client_input_requested" in types:
            break
        time.sleep(0.1)
    assert "tool_call_completed" in types and "client_input_requested" in types, types
    again = c.post(f"/api/sessions/{sid}/chat", json={"message": "are you there?"}).json()
    c.close()
    assert again["status"] == "queen", again      # not "queen_revived": her loop did not die


def test_a_tool_argument_with_a_lone_surrogate_does_not_kill_the_queen(tmp_path: Path) -> None:
    """The message is plain ASCII, but the tool arguments the model produces from it decode (JSON
    ``\\udcff``) to a lone surrogate, as a real model naming an undecodable file would send them.

    Found by this suite: today recording the model's response fails (UnicodeEncodeError in
    ``recordings.put``), the queen's loop ends with an error and the next chat answers ``queen_revived``.
    """
    proc = ServeProc(home=tmp_path / "home", logs=tmp_path / "logs").start()
    try:
        with httpx.Client(base_url=proc.url, timeout=20) as c:
            sid = c.post("/api/sessions", json={}).json()["session_id"]
            message = 'demo:tool read_file {"path": "bad\\udcffname.txt"}'
            assert "\\udcff" in message and message.isascii()
            after = c.post(f"/api/sessions/{sid}/chat", json={"message": message}).json()["after_seq"]
            deadline = time.monotonic() + 10
            types: list[str] = []
            while time.monotonic() < deadline and "client_input_requested" not in types:
                time.sleep(0.1)
                events = c.get(f"/api/sessions/{sid}/events/history", params={"after": str(after)}).json()["events"]
                types = [e["type"] for e in events]
            assert "client_input_requested" in types, types
            again = c.post(f"/api/sessions/{sid}/chat", json={"message": "are you there?"}).json()
            assert again["status"] == "queen", again
    finally:
        proc.stop()
        proc.cleanup()
