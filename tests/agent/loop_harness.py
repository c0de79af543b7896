"""Running one AgentLoop on in-memory storage, and watching what it publishes and stores."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from apiary.agent.context import BaseHooks, InboxItem, RunContext
from apiary.agent.emitter import Emitter
from apiary.agent.loop import AgentLoop, LoopOutcome
from apiary.agent.state import QUEEN_LOOP, LoopConfig
from apiary.bus.bus import EventBus
from apiary.core.clock import SystemClock
from apiary.core.events import StoredEvent
from apiary.core.ids import SequentialIds
from apiary.core.messages import JsonObject, ToolSpec
from apiary.llm.base import LLMProvider
from apiary.storage.base import Stores
from apiary.storage.memory import MemoryConversationStore, MemoryStores
from apiary.tools.base import Tool, ToolContext, ToolOutput, Toolset

SESSION = "s1"


class FakeTool:
    """A tool whose call is ``fn(args)``; by default it echoes its arguments."""

    def __init__(self, name: str, fn: Callable[[Mapping[str, Any]], Awaitable[str]] | None = None, *,
                 idempotent: bool = False, concurrency_safe: bool = False) -> None:
        self.spec = ToolSpec(name, f"fake {name}")
        self.is_idempotent = idempotent
        self.is_concurrency_safe = concurrency_safe
        self.calls: list[dict[str, Any]] = []
        self._fn = fn

    async def call(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        self.calls.append(dict(args))
        if self._fn is None:
            return ToolOutput(f"echo {dict(args)}")
        return ToolOutput(await self._fn(args))


def blocking_tool(name: str = "block") -> FakeTool:
    async def forever(args: Mapping[str, Any]) -> str:
        await asyncio.Event().wait()
        return "unreachable"

    return FakeTool(name, forever)


class FreezableConversations(MemoryConversationStore):
    """Once ``frozen``, writes are dropped: what is stored is what a process killed then left."""

    frozen = False

    async def append_message(self, owner: str, message: JsonObject) -> None:
        if not self.frozen:
            await super().append_message(owner, message)

    async def put_cursor(self, owner: str, cursor: JsonObject) -> None:
        if not self.frozen:
            await super().put_cursor(owner, cursor)

    async def put_meta(self, owner: str, meta: JsonObject) -> None:
        if not self.frozen:
            await super().put_meta(owner, meta)

    async def put_partial(self, owner: str, seq: int, partial: JsonObject | None) -> None:
        if not self.frozen:
            await super().put_partial(owner, seq, partial)


def crashable_stores() -> MemoryStores:
    stores = MemoryStores()
    stores.conversations = FreezableConversations()
    return stores


class LoopRun:
    def __init__(self, stores: Stores, llm: LLMProvider, *, role: Literal["queen", "worker"] = "queen",
                 tools: list[Tool] | None = None, config: LoopConfig | None = None,
                 initial: list[str] | None = None, greet: bool = False, workspace: Any = None) -> None:
        self.stores = stores
        self.llm = llm
        self.bus = EventBus(stores.events, SystemClock())
        node = "queen" if role == "queen" else "worker"
        emitter = Emitter(self.bus, SESSION, stream_id=node if role == "queen" else "default", node_id=node,
                          execution_id=SESSION)
        self.toolset = Toolset(tools or [])
        self.ctx = RunContext(
            role=role, owner=f"{role}:{SESSION}", run_id="run1", llm=llm,
            config=config or (QUEEN_LOOP if role == "queen" else LoopConfig()), emitter=emitter,
            conversations=stores.conversations, recordings=stores.recordings, clock=SystemClock(),
            ids=SequentialIds(), hooks=BaseHooks("You are a test agent.", self.toolset),
            tool_context=ToolContext(workspace=workspace or ".", session_id=SESSION, node_id=node),
        )
        self.loop = AgentLoop(self.ctx, initial_messages=initial, greet=greet)
        self.task: asyncio.Task[LoopOutcome] | None = None

    def start(self) -> LoopRun:
        self.task = asyncio.create_task(self.loop.run())
        return self

    def say(self, text: str, kind: Literal["client", "event"] = "client") -> None:
        self.loop.inject(InboxItem(text, kind))

    async def events(self, type_: str | None = None, *, after: int = 0) -> list[StoredEvent]:
        stored = await self.stores.events.read(SESSION, after=after)
        return [s for s in stored if type_ is None or s.type == type_]

    async def last_id(self) -> int:
        return await self.stores.events.last_id(SESSION)

    async def wait_for(self, type_: str, *, after: int = 0, count: int = 1, timeout: float = 10.0
                       ) -> list[StoredEvent]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.events(type_, after=after)
            if len(found) >= count:
                return found
            if self.task is not None and self.task.done():
                self.task.result()   # raise the loop's error instead of waiting in vain
                raise AssertionError(f"loop ended before {count} {type_} after {after}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {count} {type_} after {after} within {timeout}s")
            await asyncio.sleep(0.005)

    async def messages(self) -> list[JsonObject]:
        return (await self.stores.conversations.load(self.ctx.owner)).messages

    async def stop(self) -> None:
        self.loop.signal_shutdown()
        if self.task is not None:
            await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 10)

    async def kill(self) -> None:
        """Cancel the loop's task (its own cleanup still runs)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
