"""The fake providers' token counts: the incremental character count equals a full count."""

from __future__ import annotations

import random

from apiary.llm.base import ModelRequest
from apiary.llm.fake import _PrefixChars, request_chars


def test_incremental_request_chars_match_a_full_count():
    rng = random.Random(5)
    counter = _PrefixChars(size=2)
    conversations: list[list[dict]] = [[] for _ in range(3)]
    for _ in range(300):
        messages = rng.choice(conversations)
        messages.append({"seq": len(messages), "role": "user", "content": "x" * rng.randint(0, 50)})
        if rng.random() < 0.05:
            messages.append({"seq": -1, "role": "tool", "content": ["not", "a", "string"]})
        if rng.random() < 0.03 and len(messages) > 2:
            messages[len(messages) // 2] = {"seq": -2, "role": "user", "content": "replaced"}
            messages.pop()   # the tail changes too: counted afresh
        request = ModelRequest(messages=list(messages), system="sys")
        assert request_chars(request, counter) == request_chars(request)
    assert request_chars(ModelRequest(messages=[], system="abc"), counter) == 3
