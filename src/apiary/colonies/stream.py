"""ExecutionStream: the manager of one entry point; at most one execution at a time (SPEC B 2.3, 2.5)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

from apiary.colonies.execution import Execution, ExecutionRequest
from apiary.core.errors import AlreadyRunning
from apiary.core.tasks import TaskOwner

if TYPE_CHECKING:
    from apiary.colonies.runtime import ColonyRuntime

CancelOutcome = Literal["cancelled", "cancelling", "not_found"]
RESTARTED = "Restarted with new execution"


class ExecutionStream:
    def __init__(self, runtime: ColonyRuntime, entry_point: str, tasks: TaskOwner) -> None:
        self.runtime = runtime
        self.id = entry_point
        self._tasks = tasks
        self.active: dict[str, Execution] = {}
        self._lock = asyncio.Lock()

    def active_ids(self) -> list[str]:
        return list(self.active)

    async def start(self, request: ExecutionRequest) -> Execution:
        for execution_id in self.active_ids():
            await self.cancel(execution_id, RESTARTED)
        async with self._lock:
            if self.active:
                ids = self.active_ids()
                raise AlreadyRunning(
                    f"Stream '{self.id}' already has an active execution: {ids}. Concurrent executions on the "
                    "same stream are not allowed.", stream_id=self.id, active_execution_ids=ids)
            execution = Execution(self.runtime, request)
            self.active[execution.id] = execution
            execution.task = self._tasks.spawn(execution.run(), name=f"execution:{execution.id}")
            execution.task.add_done_callback(lambda _t, e=execution: self._forget(e))
            return execution

    def _forget(self, execution: Execution) -> None:
        # Ids are reused, so only this execution's own cleanup may remove its registration.
        if self.active.get(execution.id) is execution:
            del self.active[execution.id]

    async def cancel(self, execution_id: str, reason: str) -> CancelOutcome:
        execution = self.active.get(execution_id)
        task = execution.task if execution else None
        if execution is None or task is None or task.done():
            return "not_found"
        if execution.cancel_reason is None:
            execution.cancel_reason = reason
        execution.status = "cancelling"
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.runtime.settings.colonies.cancel_grace_s)
        return "cancelled" if done else "cancelling"
