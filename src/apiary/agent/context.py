"""RunContext: everything one loop run works with — its deps (never persisted) and its state.

Messages are stored as they happen: the assistant message before its tools run, each tool
result as soon as it exists, partial text while streaming (throttled), the cursor after every
iteration. The writes of one such moment (a model response and its recording, a tool result and
its recording) are stored together, as one transaction where the stores share a database.
Recordings (model responses and tool results per iteration) let a resume pay for no model turn
twice and re-run no finished tool, and let a recorded replay call nothing at all.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from apiary.agent.budget import Budget
from apiary.agent.emitter import Emitter
from apiary.agent.state import LoopConfig, RunState
from apiary.core.clock import Clock, stamp
from apiary.core.ids import IdFactory
from apiary.core.messages import JsonObject, make_message
from apiary.llm.base import LLMProvider
from apiary.storage.base import ConversationStore, RecordingStore
from apiary.tools.base import ToolContext, Toolset

ReplayMode = Literal["live", "resume", "recorded"]


@dataclass
class InboxItem:
    content: str
    kind: Literal["client", "event", "trigger", "answer"] = "client"
    images: list[JsonObject] = field(default_factory=list)
    request_id: str | None = None
    trigger: JsonObject | None = None


class LoopHooks(Protocol):
    """What differs between the queen and a worker, asked for at every iteration."""

    def system_prompt(self) -> str: ...

    def tools(self) -> Toolset: ...

    def iteration_data(self) -> JsonObject: ...

    async def after_iteration(self, ctx: RunContext, kind: str) -> None: ...

    async def on_escalation(self, ctx: RunContext, request_id: str, reason: str, context: str) -> None: ...


class BaseHooks:
    def __init__(self, system_prompt: str = "", tools: Toolset | None = None) -> None:
        self._prompt = system_prompt
        self._tools = tools or Toolset()

    def system_prompt(self) -> str:
        return self._prompt

    def tools(self) -> Toolset:
        return self._tools

    def iteration_data(self) -> JsonObject:
        return {}

    async def after_iteration(self, ctx: RunContext, kind: str) -> None:
        return None

    async def on_escalation(self, ctx: RunContext, request_id: str, reason: str, context: str) -> None:
        return None


@dataclass
class RunContext:
    role: Literal["queen", "worker"]
    owner: str                     # conversation key in the store
    run_id: str
    llm: LLMProvider
    config: LoopConfig
    emitter: Emitter
    conversations: ConversationStore
    recordings: RecordingStore
    clock: Clock
    ids: IdFactory
    hooks: LoopHooks
    tool_context: ToolContext
    state: RunState = field(default_factory=RunState)
    replay: ReplayMode = "live"
    recorded: dict[tuple[int, str], Any] = field(default_factory=dict)
    inbox: deque[InboxItem] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    shutdown: bool = False
    # Questions or escalations waiting for an answer: request id -> monotonic time asked.
    waiting_requests: dict[str, float] = field(default_factory=dict)
    budgets: list[Budget] = field(default_factory=list)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Writes queued by ``stage_*`` for the next ``flush`` (see below).
    staged: list[tuple[Any, ...]] = field(default_factory=list, repr=False)

    @property
    def node_id(self) -> str:
        return self.emitter.node_id

    def stamp(self) -> str:
        return stamp(self.clock.now())

    async def add_message(self, role: str, content: str, **extra: Any) -> JsonObject:
        msg = self.stage_message(role, content, **extra)
        await self.flush()
        return msg

    async def save_cursor(self) -> None:
        self.staged.append(("cursor", self.owner, self.state.cursor(self.node_id)))
        await self.flush()

    async def record(self, key: str, value: Any) -> None:
        self.stage_record(key, value)
        await self.flush()

    # -- writes of one step, stored together ---------------------------------------------------
    # ``stage_*`` adds a message to the state (or notes a recording) and queues its write; ``flush``
    # stores everything queued, in order, as one transaction where the stores share a database.
    # Callers stage and flush with no ``await`` in between, so nothing staged is ever left behind.

    def stage_message(self, role: str, content: str, **extra: Any) -> JsonObject:
        msg = make_message(self.state.take_seq(), role, content, run_id=self.run_id, **extra)  # type: ignore[arg-type]
        self.state.messages.append(msg)
        self.staged.append(("message", self.owner, msg))
        return msg

    def stage_record(self, key: str, value: Any) -> None:
        if self.replay != "recorded":
            self.staged.append(("record", self.owner, self.run_id, self.state.iteration, key, value))
            if self.replay == "resume":   # a live run never reads them back (recorded_value): not kept in memory
                self.recorded[(self.state.iteration, key)] = value

    def stage_partial_cleared(self, seq: int) -> None:
        self.staged.append(("partial", self.owner, seq, None))

    async def flush(self) -> None:
        ops, self.staged = self.staged, []
        if not ops:
            return
        conversations = self.conversations
        write_many = getattr(conversations, "write_many", None)
        if write_many is not None and len(ops) > 1 and conversations.batches_with(self.recordings):  # type: ignore[attr-defined]
            await write_many(ops)
            return
        for op in ops:
            kind = op[0]
            if kind == "message":
                await conversations.append_message(op[1], op[2])
            elif kind == "record":
                await self.recordings.put(*op[1:])
            elif kind == "partial":
                await conversations.put_partial(op[1], op[2], op[3])
            elif kind == "meta":
                await conversations.put_meta(op[1], op[2])
            elif kind == "delete":
                await conversations.delete(op[1])
            else:
                await conversations.put_cursor(op[1], op[2])

    def recorded_value(self, key: str) -> Any:
        if self.replay == "live":
            return None
        return self.recorded.get((self.state.iteration, key))

    # -- inbox ---------------------------------------------------------------------------------

    def put(self, item: InboxItem) -> None:
        self.inbox.append(item)
        self.wake.set()

    def take(self, *, answer_for: str | None = None) -> InboxItem | None:
        """The next item; with ``answer_for`` only one addressed to that request or a plain one."""
        for item in list(self.inbox):
            if answer_for is None or item.request_id in (None, answer_for):
                if answer_for is not None and item.kind not in ("client", "answer"):
                    continue
                self.inbox.remove(item)
                return item
        return None

    def has_items(self) -> bool:
        return bool(self.inbox)

    def describe_item(self, item: InboxItem) -> tuple[str, JsonObject]:
        """The user message an inbox item becomes (SPEC B 3.5), and its extra flags."""
        if item.kind == "event":
            return f"{self.stamp()} [External event] {item.content}", {}
        if item.kind == "trigger":
            return f"{self.stamp()}\n{item.content}", {"is_trigger": True}
        extra: JsonObject = {"is_client_input": True}
        if item.images:
            extra["image_content"] = item.images
        return f"{self.stamp()} {item.content}", extra
