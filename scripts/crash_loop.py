#!/usr/bin/env python3
"""The crash loop in long mode: ``.venv/bin/python scripts/crash_loop.py --rounds 100 [--seed N]``.

Runs a colony at work, SIGKILLs ``apiary serve`` at seeded random moments, restarts it on the same home,
then checks that every task ended exactly once, every event log is 1..N and every stored conversation
is well-formed (see tests/crashloop.py). Prints progress, then one JSON report; exit status 1 when a
problem was found. The home is kept (``--keep``) or removed afterwards. ``APIARY_CRASH_ROUNDS`` is
the default for ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from crashloop import CrashLoop  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("APIARY_CRASH_ROUNDS", "100")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("APIARY_CRASH_SEED", "20260501")))
    parser.add_argument("--tasks", type=int, default=None, help="default: max(12, rounds / 2)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep the home and the server logs")
    parser.add_argument("--base", type=Path, default=None, help="folder for the home and logs (default: a temp dir)")
    args = parser.parse_args()
    base = args.base or Path(tempfile.mkdtemp(prefix="apiary-crash-"))
    base.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {message}", flush=True)

    try:
        tasks = args.tasks or max(12, args.rounds // 2)
        loop = CrashLoop(base, rounds=args.rounds, seed=args.seed, tasks=tasks, log=log)
        report = loop.run(drain_timeout=args.drain_timeout)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(report.as_dict(), indent=1))
    if args.keep:
        print(f"home and logs kept in {base}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
