"""Confine a model-supplied path to an agent's workspace.

The model names files with relative paths. ``resolve_in_workspace`` walks the path one component at a
time, the way the kernel would, and follows every symlink it meets (also the last component, also a
dangling one) with ``realpath``; any step that lands outside the workspace refuses the whole path. It
only ever calls ``lstat``, so nothing on disk is created or changed, refused or not.

Backslashes count as separators (models trained on Windows paths write ``a\\b``) and drive-letter
prefixes as absolute paths: stricter than POSIX needs, never looser.

Residual risk: this is a check, not a chroot. A symlink swapped in between the check and the use
(only possible for something else running in the same workspace, e.g. a background command) is
not caught; file tools open the final component without following links to narrow the window.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from apiary.core.errors import ToolRetry

NAME_MAX = 255  # bytes per path component on common Linux/macOS file systems
PATH_MAX = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")


def shown(user_path: str, limit: int = 120) -> str:
    """The path as quoted back to the model: short and free of control characters."""
    text = user_path if len(user_path) <= limit else user_path[:limit] + "..."
    return "'" + re.sub(r"[\x00-\x1f\x7f]", "?", text) + "'"


def is_inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_in_workspace(workspace: Path, user_path: str) -> Path:
    """The real, absolute path ``user_path`` names inside ``workspace``; ``ToolRetry`` if it escapes.

    ``""`` and ``"."`` name the workspace itself. The result has every existing symlink resolved,
    so later operations do not follow links again.
    """
    if not isinstance(user_path, str):
        raise ToolRetry("path must be a string")
    quoted = shown(user_path)
    if "\x00" in user_path:
        raise ToolRetry(f"path {quoted} contains a NUL byte")
    if len(user_path.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise ToolRetry(f"path {quoted} is too long (over {PATH_MAX} bytes)")
    normalized = user_path.replace("\\", "/")
    if normalized.startswith("/") or _DRIVE.match(normalized):
        raise ToolRetry(
            f"path {quoted} is outside the workspace: absolute paths are not allowed, "
            "use a path relative to the workspace"
        )
    root = Path(os.path.realpath(workspace))
    current = root
    for part in normalized.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if current == root:
                raise ToolRetry(f"path {quoted} is outside the workspace")
            current = current.parent
            continue
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise ToolRetry(f"path {quoted} has a name longer than {NAME_MAX} bytes")
        candidate = current / part
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            current = candidate  # not there (yet): nothing below it can be a symlink either
            continue
        except OSError as exc:
            raise ToolRetry(f"cannot access path {quoted}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(mode):
            # realpath follows the whole chain, dangling or not, as far as it exists.
            target = Path(os.path.realpath(candidate))
            if not is_inside(target, root):
                raise ToolRetry(f"path {quoted} is outside the workspace (through a symlink)")
            current = target
        else:
            current = candidate
    return current


def relative_display(root: Path, path: Path) -> str:
    """``path`` relative to the (real) workspace root, as shown to the model; ``.`` for the root."""
    real_root = Path(os.path.realpath(root))
    try:
        rel = path.relative_to(real_root)
    except ValueError:
        return str(path)
    return rel.as_posix() or "."
