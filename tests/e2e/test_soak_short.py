"""A short soak (about 30 s of chats, triggers, stops, pauses, session churn and stream visits against a
real server): what the process holds stays bounded. Counts only, no timing: open file descriptors
come back to the baseline (plus a small slack for connections and SQLite files in flight), RSS grows
less than a generous bound, every request got an answer and none was a 5xx other than a documented
503. ``scripts/soak.py`` is the long version (30 minutes by default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from soaking import Soak

SECONDS = float(os.environ.get("APIARY_SOAK_SECONDS", "30"))
FD_SLACK = 10
RSS_GROWTH_MAX = 80 * 1024 * 1024


@pytest.mark.e2e
@pytest.mark.timeout(SECONDS + 90)
def test_short_soak_stays_bounded(tmp_path: Path) -> None:
    report = Soak(tmp_path, seconds=SECONDS, sample_every_s=3.0, warmup_s=min(8.0, SECONDS / 3)).run()
    summary = report.summary()
    print(json.dumps(summary, indent=1))
    assert report.errors == [], report.errors
    assert report.steps >= 20 and len(report.samples) >= 4
    base, last = report.baseline(), report.last()
    assert last.open_fds <= base.open_fds + FD_SLACK, summary["open_fds"]
    assert last.rss_bytes - base.rss_bytes <= RSS_GROWTH_MAX, summary["rss_mib"]
    if summary.get("asyncio_tasks"):
        # live sessions do not change after the warm-up, so neither should the task count, beyond slack
        assert summary["asyncio_tasks"]["last"] <= summary["asyncio_tasks"]["baseline"] + 20, summary


async def test_the_demo_model_keeps_nothing_per_request() -> None:
    """The server's default model must not grow with every call it answers.

    Found by this suite (the 10-minute soak grew ~10 MiB a minute): ``DemoLLM`` inherits the test
    fake ``FunctionLLM``, which appends every ``ModelRequest`` (the whole message list, the system
    prompt, the tool specs) to ``self.requests`` and never lets go. Not marked e2e: no server needed.
    """
    import gc
    import tracemalloc

    from apiary.core.config import Settings
    from apiary.llm.base import ModelRequest
    from apiary.llm.registry import make_llm

    llm = make_llm("demo", Settings(home=Path("/nonexistent-apiary-home")))
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "x" * 200}
               for i in range(200)]

    async def one_call(n: int) -> None:
        request = ModelRequest(messages=[dict(m) for m in history] + [{"role": "user", "content": f"turn {n}"}],
                               system="You are the queen. " * 50)
        async for _event in llm.stream(request):
            pass

    await one_call(0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(100):
        await one_call(n)
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # 100 requests of ~60 KB each would be ~6 MB; a model that keeps nothing retains next to nothing
    assert retained < 512 * 1024, f"the demo model kept {retained / 1024:.0f} KiB after 100 calls"
