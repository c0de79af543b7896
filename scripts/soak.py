#!/usr/bin/env python3
"""Soak ``apiary serve``: ``.venv/bin/python scripts/soak.py [--minutes 30] [--quick]``.

Runs chats, colony triggers, stops, pauses, session churn and short event-stream visits against one
server process for ``--minutes`` (default 30; ``--quick`` is 60 s), sampling its RSS (/proc/<pid>/status)
and open file descriptors (/proc/<pid>/fd) every ``--sample-every`` seconds, plus the asyncio task count
and event-loop lag (worst per sample, p50 / p99 from the server's lag histogram) when the server has
``GET /api/debug/runtime``. Prints the samples as they come and a JSON summary at the end (``--json FILE``
writes it too). Exit status 1 on a 5xx, a transport error, an
unclean shutdown, or growth past ``--max-fd-growth`` / ``--max-rss-growth-mib``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from soaking import Soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="60 seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sample-every", type=float, default=None, help="seconds between samples")
    parser.add_argument("--max-fd-growth", type=int, default=20)
    parser.add_argument("--max-rss-growth-mib", type=float, default=200.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary there")
    parser.add_argument("--keep", action="store_true", help="keep the home and the server logs")
    args = parser.parse_args()
    seconds = 60.0 if args.quick else args.minutes * 60
    every = args.sample_every or (5.0 if seconds <= 120 else 30.0)
    base = Path(tempfile.mkdtemp(prefix="apiary-soak-"))
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:8.1f}s] {message}", flush=True)

    try:
        report = Soak(base, seconds=seconds, seed=args.seed, sample_every_s=every, log=log).run()
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    summary = report.summary()
    fd_growth = summary["open_fds"]["last"] - summary["open_fds"]["baseline"]
    rss_growth = summary["rss_mib"]["growth"]
    summary["verdict"] = {"fd_growth": fd_growth, "rss_growth_mib": rss_growth,
                          "ok": not report.errors and fd_growth <= args.max_fd_growth
                          and rss_growth <= args.max_rss_growth_mib}
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.keep:
        print(f"home and logs kept in {base}")
    return 0 if summary["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
