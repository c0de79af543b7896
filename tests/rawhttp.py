"""A tiny HTTP/1.1 client on a raw socket, for requests a client library would rewrite.

httpx (like browsers) removes ``.``/``..`` segments, also percent-encoded ones (``%2E%2E``), before
sending; the fuzz tests need the bytes to reach the server unchanged. One keep-alive connection,
reopened when the server closes it. Event streams are not read: the status and headers come back
and the connection is dropped. Every read has a timeout.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    method: str = ""
    path: bytes = b""

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawHttp:
    host: str
    port: int
    timeout: float = 10.0
    sock: socket.socket | None = field(default=None, repr=False)
    _buf: bytes = b""

    @classmethod
    def for_url(cls, url: str, timeout: float = 10.0) -> RawHttp:
        hostport = url.split("://", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        return cls(host, int(port), timeout)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self._buf = None, b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._buf = b""
        return self.sock

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            self._fill()
        head, _, self._buf = self._buf.partition(marker)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buf += chunk

    def request(self, method: str, path: bytes | str, body: bytes | None = None,
                headers: dict[str, str] | None = None, *, json_body: Any = None) -> RawResponse:
        raw_path = path.encode() if isinstance(path, str) else path
        if json_body is not None:
            body = json.dumps(json_body).encode()
        lines = [f"{method} ".encode() + raw_path + b" HTTP/1.1", f"Host: {self.host}:{self.port}".encode()]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}".encode())
        if body is not None:
            lines.append(f"Content-Length: {len(body)}".encode())
        data = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
        for attempt in (1, 2):
            try:
                return self._exchange(method, raw_path, data)
            except (ConnectionError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _exchange(self, method: str, raw_path: bytes, data: bytes) -> RawResponse:
        sock = self._connect()
        sock.sendall(data)
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("content-type", "").startswith("text/event-stream"):
            self.close()        # a stream: the status and headers are all we want
            return RawResponse(status, headers, b"", method, raw_path)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                body += self._read_exactly(size)
                self._read_exactly(2)
        elif "content-length" in headers:
            body = self._read_exactly(int(headers["content-length"]))
        else:
            body = self._buf
            try:
                while True:
                    assert self.sock is not None
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            finally:
                self.close()
        if headers.get("connection", "").lower() == "close" or status_line.startswith("HTTP/1.0"):
            self.close()
        return RawResponse(status, headers, body, method, raw_path)
