"""Which API server serves a session, when several share one PostgreSQL database.

A session's queen runs in one process only: the server that opens it takes a lease
(``apiary_session_leases``), renews the leases of all its live sessions in one statement every
third of their length, and gives them up when the session stops. Another server asked for that
session answers 409 naming the holder, until the lease expires (the holder died) and it may take it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket

from apiary.core.errors import Conflict
from apiary.core.tasks import TaskOwner
from apiary.storage.base import Coordination

logger = logging.getLogger(__name__)


class SessionLeases:
    def __init__(self, coordination: Coordination, *, lease_s: float, tasks: TaskOwner) -> None:
        self.coordination = coordination
        self.lease_s = lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._tasks = tasks
        self._renewing: asyncio.Task[None] | None = None

    async def acquire(self, session_id: str) -> None:
        holder = await self.coordination.lease_session(session_id, self.owner, self.lease_s)
        if holder != self.owner and _died_here(holder):   # e.g. this server, killed and started again
            holder = await self.coordination.lease_session(session_id, self.owner, self.lease_s, take_from=holder)
        if holder != self.owner:
            raise Conflict(f"Session '{session_id}' is served by another API server ({holder}); send its "
                           "requests there, or wait for that server's lease to expire", held_by=holder)
        if self._renewing is None or self._renewing.done():
            self._renewing = self._tasks.spawn(self._renew_forever(), name="session-leases")

    async def release(self, session_id: str) -> None:
        try:
            await self.coordination.release_session(session_id, self.owner)
        except Exception:   # it expires by itself
            logger.warning("could not release the lease of session %s", session_id, exc_info=True)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.coordination.renew_sessions(self.owner, self.lease_s)
            except Exception:
                logger.warning("could not renew session leases", exc_info=True)

    async def release_all(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
        try:
            await self.coordination.release_session(None, self.owner)
        except Exception:
            logger.warning("could not release session leases", exc_info=True)


def _died_here(holder: str) -> bool:
    """A holder on this host whose process is gone: its lease need not be waited out."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
