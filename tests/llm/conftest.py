from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fake_servers import FakeLLMServer, running_fake_llm_server


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLMServer]:
    async with running_fake_llm_server() as server:
        yield server
