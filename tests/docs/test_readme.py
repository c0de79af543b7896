"""The README's tour runs as written against a real `apiary serve` process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tour_script() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the tour has a bash block"
    lines = []
    for line in block.group(1).splitlines():
        if line.startswith("curl -N "):     # streams run forever; tail them for a moment instead
            line = "timeout 2 " + line.rstrip(" &") + " > /dev/null || true"
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.e2e
def test_readme_tour_runs(tmp_path: Path) -> None:
    env = {**os.environ, "APIARY_HOME": str(tmp_path / "home")}
    server = subprocess.Popen([sys.executable, "-m", "apiary", "serve", "--port", "0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert port, line
        script = tour_script().replace("127.0.0.1:8787", f"127.0.0.1:{port.group(1)}")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr + done.stdout
        assert '"delivered": true' in done.stdout
        assert '"execution_id"' in done.stdout
        assert '"mode": "recorded"' in done.stdout
        assert '"progress"' in done.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
