"""Colonies: worker specs on disk, executions of worker loops, the task queue, goal progress, timers."""
