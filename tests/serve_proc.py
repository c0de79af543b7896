"""A real ``python -m apiary serve`` process for the reliability suite, usable from sync and async code.

Used by tests (``from serve_proc import ServeProc``) and by ``scripts/crash_loop.py`` and
``scripts/soak.py`` (which put this folder on ``sys.path``). The server's stdout and stderr go to
files beside its home, so a full pipe can never block it and a failure can show what it printed.
Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(r"^apiary listening on (http://127\.0\.0\.1:(\d+))\s")
START_TIMEOUT_S = 30.0


class ServerFailedToStart(RuntimeError):
    def __init__(self, message: str, *, returncode: int | None, stdout: str, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any APIARY_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class ServeProc:
    """One server process. ``start`` returns once it printed its URL (or raises ServerFailedToStart)."""

    home: Path
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    starts: int = 0

    @property
    def api(self) -> str:
        return self.url + "/api"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _paths(self) -> tuple[Path, Path]:
        return self.logs / f"serve{self.starts}.out", self.logs / f"serve{self.starts}.err"

    def start(self, timeout: float = START_TIMEOUT_S, *, log_level: str = "warning") -> ServeProc:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        out_path, err_path = self._paths()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "apiary", "--log-level", log_level, "serve", "--port", "0",
                 "--home", str(self.home)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=str(self.logs), env=clean_env(self.env))
        deadline = time.monotonic() + timeout
        while True:
            text = out_path.read_text(errors="replace")
            first = text.splitlines()[0] if "\n" in text else ""
            found = LISTENING.match(first + " ") if first else None
            if found:
                self.url = found.group(1)
                return self
            code = self.proc.poll()
            if code is not None or time.monotonic() > deadline:
                if code is None:
                    self.proc.kill()
                    code = self.proc.wait(10)
                raise ServerFailedToStart(
                    f"apiary serve did not start (exit {code}): {self.stderr()[-2000:]}", returncode=code,
                    stdout=out_path.read_text(errors="replace"), stderr=self.stderr())
            time.sleep(0.02)

    def stdout(self) -> str:
        return self._paths()[0].read_text(errors="replace") if self.starts else ""

    def stderr(self) -> str:
        return self._paths()[1].read_text(errors="replace") if self.starts else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait (bounded) for the exit; SIGKILL after the timeout. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def stop(self) -> int:
        return self.signal(signal.SIGTERM)

    def kill(self) -> int:
        return self.signal(signal.SIGKILL)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def proc_open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
