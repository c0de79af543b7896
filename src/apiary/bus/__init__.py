"""The event bus: append to the log first, then fan out."""

from apiary.bus.bus import EventBus, Subscription

__all__ = ["EventBus", "Subscription"]
