"""Queen phases (SPEC B 4): which tools each phase offers and the prompt part it adds."""

from __future__ import annotations

from typing import Final, Literal

Phase = Literal["independent", "incubating", "working", "reviewing"]
PHASES: Final[tuple[str, ...]] = ("independent", "incubating", "reviewing", "working")

PHASE_TOOLS: Final[dict[str, tuple[str, ...]]] = {
    "independent": ("read_file", "write_file", "edit_file", "hashline_edit", "search_files", "run_command",
                    "undo_changes", "list_directory", "start_incubating_colony"),
    "incubating": ("read_file", "search_files", "run_command", "create_colony", "cancel_incubation"),
    "working": ("read_file", "search_files", "run_command", "get_worker_status", "inject_message",
                "list_worker_questions", "reply_to_worker", "stop_worker", "run_parallel_workers"),
    "reviewing": ("read_file", "search_files", "run_command", "get_worker_status", "list_worker_questions",
                  "reply_to_worker", "run_parallel_workers", "set_trigger", "remove_trigger", "list_triggers"),
}
_IN_SOME_PHASE: Final = frozenset(name for names in PHASE_TOOLS.values() for name in names)

PHASE_PROMPTS: Final[dict[str, str]] = {
    "independent": "You are talking with the user directly; no colony is at work.",
    "incubating": "You are shaping a colony with the user before creating it.",
    "working": "Your workers are running; follow their progress and answer their questions.",
    "reviewing": "Your workers have stopped; review and explain their results.",
}


def is_phase(value: object) -> bool:
    return isinstance(value, str) and value in PHASES


def tools_for_phase(phase: str, available: list[str]) -> list[str]:
    """The tools offered in ``phase``: its list, plus in ``independent`` every tool in no list."""
    listed = PHASE_TOOLS.get(phase, ())
    names = [n for n in available if n in listed]
    if phase == "independent":
        names += [n for n in available if n not in _IN_SOME_PHASE]
    return names
