"""Hard budgets in tokens, money and run time (per session, per colony).

Checked before every model call. The call's output is capped to what the budgets have left, and
its input estimate plus that cap is reserved first, so workers running side by side cannot
overshoot together; the reservation is replaced by the real usage afterwards.
``budget_warning`` is published once at 80 % of a limit and ``budget_exhausted`` at 100 %.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apiary.core.errors import UsageLimitExceeded

WARN_AT = 0.8
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    tokens: int | None = None
    usd: float | None = None
    seconds: float | None = None

    @property
    def any(self) -> bool:
        return self.tokens is not None or self.usd is not None or self.seconds is not None


@dataclass
class Budget:
    scope: str                     # "session" or "colony"
    name: str
    limits: Limits
    tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0
    reserved_tokens: int = 0
    warned: set[str] = field(default_factory=set)
    exhausted: set[str] = field(default_factory=set)
    notify: Notify | None = None
    persist: Callable[[dict[str, Any]], None] | None = None

    def usage(self) -> dict[str, Any]:
        return {"scope": self.scope, "name": self.name, "tokens": self.tokens, "usd": round(self.usd, 6),
                "seconds": round(self.seconds, 3), "reserved_tokens": self.reserved_tokens,
                "limits": {"tokens": self.limits.tokens, "usd": self.limits.usd, "seconds": self.limits.seconds},
                "exhausted": sorted(self.exhausted)}

    def restore(self, saved: dict[str, Any]) -> None:
        self.tokens = int(saved.get("tokens") or 0)
        self.usd = float(saved.get("usd") or 0.0)
        self.seconds = float(saved.get("seconds") or 0.0)

    def _over(self, reserve: int = 0) -> str | None:
        lim = self.limits
        if lim.tokens is not None and self.tokens + self.reserved_tokens + reserve > lim.tokens:
            return f"token budget of {lim.tokens} for {self.scope} {self.name} exhausted ({self.tokens} used)"
        if lim.usd is not None and self.usd >= lim.usd:
            return f"money budget of ${lim.usd:g} for {self.scope} {self.name} exhausted (${self.usd:.4f} used)"
        if lim.seconds is not None and self.seconds >= lim.seconds:
            return f"time budget of {lim.seconds:g}s for {self.scope} {self.name} exhausted"
        return None

    def tokens_left(self) -> int | None:
        if self.limits.tokens is None:
            return None
        return self.limits.tokens - self.tokens - self.reserved_tokens

    async def reserve(self, tokens: int) -> None:
        """Raise ``UsageLimitExceeded`` if this call could pass a limit; else hold ``tokens``."""
        reason = self._over(tokens)
        if reason is not None:
            await self._announce("budget_exhausted", reason)
            raise UsageLimitExceeded(f"Budget exhausted: {reason}")
        self.reserved_tokens += tokens
        limit = self.limits.tokens
        projected = self.tokens + self.reserved_tokens
        if limit and projected >= WARN_AT * limit and "tokens" not in self.warned:
            self.warned.add("tokens")
            await self._emit("budget_warning", "tokens", projected, limit)

    def release(self, tokens: int) -> None:
        self.reserved_tokens = max(0, self.reserved_tokens - tokens)

    async def add(self, *, tokens: int = 0, usd: float = 0.0, seconds: float = 0.0) -> None:
        self.tokens += tokens
        self.usd += usd
        self.seconds += seconds
        if self.persist is not None and self.limits.any:   # only hard limits need usage across restarts
            await asyncio.to_thread(self.persist, self.usage())
        for kind, used, limit in (("tokens", self.tokens, self.limits.tokens), ("usd", self.usd, self.limits.usd),
                                  ("seconds", self.seconds, self.limits.seconds)):
            if limit is None or limit <= 0:
                continue
            if used >= limit and kind not in self.exhausted:
                await self._announce("budget_exhausted", f"{kind} budget of {limit:g} reached", kind, used, limit)
            elif used >= WARN_AT * limit and kind not in self.warned:
                self.warned.add(kind)
                await self._emit("budget_warning", kind, used, limit)

    async def _announce(self, type_: str, reason: str, kind: str | None = None, used: float | None = None,
                        limit: float | None = None) -> None:
        key = kind or reason
        if key in self.exhausted:
            return
        self.exhausted.add(key)
        await self._emit(type_, kind, used, limit, reason=reason)

    async def _emit(self, type_: str, kind: str | None, used: float | None, limit: float | None, *,
                    reason: str | None = None) -> None:
        if self.notify is None:
            return
        data: dict[str, Any] = {"scope": self.scope, "name": self.name, "kind": kind, "used": used, "limit": limit}
        if limit:
            data["pct"] = round(100.0 * (used or 0) / limit, 1)
        if reason:
            data["reason"] = reason
        await self.notify(type_, data)
