"""What every session is built with: settings, storage, bus, clock, ids, model factory, tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apiary.bus.bus import EventBus
from apiary.core.clock import Clock
from apiary.core.config import Settings
from apiary.core.ids import IdFactory
from apiary.core.layout import Layout
from apiary.core.tasks import TaskOwner
from apiary.llm.base import LLMProvider
from apiary.sessions.files import SessionIndex
from apiary.storage.base import Stores

LLMFactory = Callable[[str], LLMProvider]


@dataclass
class SessionDeps:
    settings: Settings
    layout: Layout
    stores: Stores
    bus: EventBus
    clock: Clock
    ids: IdFactory
    make_llm: LLMFactory
    tasks: TaskOwner
    index: SessionIndex
