"""LISTEN/NOTIFY: one dedicated connection per process that listens on apiary's channels and hands
each notification (channel, payload) to the registered callbacks. Payloads are ids only, never
data (NOTIFY's limit is 8 KB). The connection is re-opened with backoff when the database goes away;
after a reconnect every callback gets ``payload=None`` so it can re-read what it may have missed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

logger = logging.getLogger(__name__)
Callback = Callable[[str, str | None], None]


class PgNotifier:
    def __init__(self, url: str, channels: tuple[str, ...]) -> None:
        self._url = url
        self._channels = channels
        self._callbacks: list[Callback] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def add_callback(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="pg-notifier")

    async def _listen_forever(self) -> None:
        delay = 0.2
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            except psycopg.Error as exc:
                logger.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                async with conn:
                    for channel in self._channels:
                        await conn.execute(f"LISTEN {channel}")
                    self.connected.set()
                    delay = 0.2
                    if not first:
                        self._dispatch_all(None)
                    first = False
                    async for note in conn.notifies():
                        self._dispatch(note.channel, note.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)

    def _dispatch(self, channel: str, payload: str | None) -> None:
        for callback in list(self._callbacks):   # a callback may remove itself
            try:
                callback(channel, payload)
            except Exception:
                logger.exception("notification callback failed")

    def _dispatch_all(self, payload: str | None) -> None:
        for channel in self._channels:
            self._dispatch(channel, payload)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
