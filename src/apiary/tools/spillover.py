"""Tool result spillover (SPEC B 3.7).

The loop passes every non-error tool result through ``spill_large_result`` (error results skip it).
With a spillover folder each result is saved as ``<spillover>/<tool>_<n>.txt`` (JSON pretty-printed,
``n`` continuing after the files already there); results up to ``max_chars`` come back unchanged,
longer ones are replaced by a header naming the saved file, a structure summary for JSON, a
"sample only" warning and a preview of at most ``PREVIEW_CHARS``. ``read_file`` results are never
saved: when too long they are cut under a header advising smaller offset/limit reads. Without a
folder, long results are cut in place under the same kind of header.

The saved files are readable with ``read_file`` by their absolute path (it accepts paths inside
``ToolContext.spillover_dir``). Saving is best effort: if it fails the result is cut in place.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREVIEW_CHARS = 5000
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _file_stem(tool_name: str) -> str:
    stem = _UNSAFE.sub("_", tool_name)[:100].lstrip(".")
    return stem or "tool"


def _as_json(content: str) -> Any:
    """The parsed value when ``content`` is a JSON object or array, else None."""
    text = content.lstrip()
    if not text or text[0] not in "{[":
        return None
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def _structure(value: Any) -> str:
    if isinstance(value, dict):
        keys = list(value)
        shown_keys = ", ".join(str(k) for k in keys[:30]) + (", ..." if len(keys) > 30 else "")
        return f"JSON object with {len(keys)} top-level key{'s' if len(keys) != 1 else ''}: {shown_keys}"
    out = f"JSON array of {len(value)} item{'s' if len(value) != 1 else ''}"
    if value and all(isinstance(item, dict) for item in value[:50]):
        keys = list(dict.fromkeys(k for item in value[:50] for k in item))
        out += "; items are objects with keys: " + ", ".join(str(k) for k in keys[:30])
    return out


def _save(folder: Path, tool_name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(tool_name)
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)\.txt$")
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := pattern.match(name))]
    n = max(numbers, default=0) + 1
    while True:  # exclusive create: tools running in parallel must not overwrite each other
        path = folder / f"{stem}_{n}.txt"
        try:
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except FileExistsError:
            n += 1


def _cut(text: str, limit: int) -> str:
    """The first ``limit`` characters, ending at a line break when one is reasonably close."""
    if len(text) <= limit:
        return text
    piece = text[:limit]
    newline = piece.rfind("\n")
    return piece[:newline] if newline > limit // 2 else piece


def spill_large_result(tool_name: str, content: str, *, spillover_dir: Path | None, max_chars: int = 30000) -> str:
    """What the model sees of a (non-error) tool result; saves it under ``spillover_dir``."""
    size = len(content)
    if tool_name == "read_file":
        if size <= max_chars:
            return content
        header = (
            f"[read_file result too large: {size:,} characters; only the first part is shown. "
            "Read the file in smaller parts with offset/limit.]\n"
        )
        return header + _cut(content, max(0, max_chars - len(header)))

    parsed = _as_json(content)
    saved_text = json.dumps(parsed, indent=2, ensure_ascii=False) if parsed is not None else content
    saved: Path | None = None
    if spillover_dir is not None:
        try:
            saved = _save(spillover_dir, tool_name, saved_text)
        except OSError:
            log.warning("could not save the %s result under %s", tool_name, spillover_dir, exc_info=True)
    if size <= max_chars:
        return content

    preview = _cut(saved_text, min(PREVIEW_CHARS, max_chars))
    lines = [f"[Tool result too large for the conversation: {size:,} characters]"]
    if saved is not None:
        lines.append(f"[Full result saved to: {saved}]")
        lines.append(
            "[Read it with read_file using offset/limit, e.g. "
            f"{json.dumps({'path': str(saved), 'offset': 1, 'limit': 200})}]"
        )
    else:
        lines.append("[The full result was not saved; only the beginning is kept]")
    if parsed is not None:
        lines.append(f"[Structure: {_structure(parsed)}]")
    lines.append(
        f"[WARNING: this is a sample only, the first {len(preview):,} of {len(saved_text):,} characters; "
        "do not draw conclusions about the whole result from it.]"
    )
    return "\n".join(lines) + "\n" + preview
