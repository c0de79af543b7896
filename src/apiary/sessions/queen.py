"""The queen: her hooks (persona, phase prompt, phase tools) and the task that runs her loop.

"The queen is running" means her loop task exists and has not ended. When it ends, for any
reason, the handle is cleared; chat and queen-context revive her from the stored conversation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from apiary.agent.context import InboxItem, RunContext
from apiary.agent.emitter import Emitter
from apiary.agent.loop import AgentLoop
from apiary.agent.state import QUEEN_LOOP
from apiary.core.messages import JsonObject
from apiary.sessions.phases import PHASE_PROMPTS, tools_for_phase
from apiary.tools.base import ToolContext, Toolset

if TYPE_CHECKING:
    from apiary.sessions.session import Session

logger = logging.getLogger(__name__)


class QueenHooks:
    def __init__(self, session: Session) -> None:
        self.session = session

    def system_prompt(self) -> str:
        s = self.session
        profile = s.profile
        return (f"You are {profile.name}, {profile.title}, the queen of an apiary session. {profile.persona}\n"
                f"Current phase: {s.phase}. {PHASE_PROMPTS.get(s.phase, '')}\n"
                "Answer the user directly and concisely. Use ask_user when you need their input.")

    def tools(self) -> Toolset:
        available = self.session.available_queen_tools()
        return available.only(tools_for_phase(self.session.phase, available.names()))

    def iteration_data(self) -> JsonObject:
        return {"phase": self.session.phase}

    async def after_iteration(self, ctx: RunContext, kind: str) -> None:
        if kind == "node_start" and self.session.mcp:
            await self.session.mcp.load()   # MCP servers start lazily, once the queen runs
        await asyncio.to_thread(self.session.write_summary, ctx.state.messages, ctx.clock.now())

    async def on_escalation(self, ctx: RunContext, request_id: str, reason: str, context: str) -> None:
        return None


class QueenRunner:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.loop: AgentLoop | None = None
        self.task: asyncio.Task[Any] | None = None

    @property
    def is_running(self) -> bool:
        """True from the start (while the loop prepares, it already takes messages) until the loop ends."""
        return self.loop is not None and (self.task is None or not self.task.done())

    async def start(self, *, initial_prompt: str | None = None, greet: bool = False) -> None:
        s = self.session
        deps = s.deps
        run_id = deps.ids.run_id()
        emitter = Emitter(deps.bus, s.id, stream_id="queen", node_id="queen", execution_id=s.id)
        ctx = RunContext(
            role="queen", owner=f"queen:{s.id}", run_id=run_id, llm=s.llm, config=QUEEN_LOOP, emitter=emitter,
            conversations=deps.stores.conversations, recordings=deps.stores.recordings, clock=deps.clock,
            ids=deps.ids, hooks=QueenHooks(s),
            tool_context=ToolContext(workspace=s.workspace, session_id=s.id, node_id="queen",
                                     spillover_dir=s.stored.dir / "data"),
            budgets=[s.budget], prices=dict(deps.settings.budgets.prices),
        )
        initial = [f"{ctx.stamp()} user_request: {initial_prompt}"] if initial_prompt else None
        # The loop object exists before its task runs, so a message sent right away is never dropped.
        loop = AgentLoop(ctx, initial_messages=initial, greet=greet)
        # The conversation is written before the task runs, so a spawn sent right after creation
        # copies the first message; the loop exists first, so a message sent right away is not dropped.
        self.loop = loop
        await loop.prepare()
        self.task = deps.tasks.spawn(self._run(loop), name=f"queen:{s.id}")

    async def _run(self, loop: AgentLoop) -> None:
        try:
            await loop.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("queen loop of %s ended with an error", self.session.id)
        finally:
            if self.loop is loop:
                self.loop = None

    def deliver(self, item: InboxItem) -> bool:
        loop = self.loop
        if loop is None or not self.is_running:
            return False
        loop.inject(item)
        return True

    def cancel_turn(self) -> bool:
        return self.loop.cancel_current_turn() if self.loop is not None else False

    async def stop(self) -> None:
        loop, task = self.loop, self.task
        if loop is not None:
            loop.signal_shutdown()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.loop = None
