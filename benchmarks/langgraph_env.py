"""The LangGraph virtual environment (``benchmarks/.venv-langgraph``), made on first use.

LangGraph is never installed into apiary's own environment: it gets a venv of its own, with the
exact versions the published numbers were measured with, from PyPI through pip. The venv is
rebuilt when the pins change (a stamp file remembers which pins it holds).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-langgraph"
# Pinned: the versions measured. The top two are the ones asked for; the rest pins what they pulled in,
# so a rerun measures the same code.
PINS = (
    "langgraph==1.2.24",
    "langgraph-checkpoint-sqlite==3.1.2",
    "langgraph-checkpoint==4.3.2",
    "langgraph-prebuilt==1.1.3",
    "langgraph-sdk==0.4.14",
    "langchain-core==1.8.3",
    "aiosqlite==0.22.1",
    "ormsgpack==1.13.1",
    "pydantic==2.14.4",
)


def python() -> Path:
    return VENV / "bin" / "python"


def _stamp() -> str:
    return hashlib.sha256("\n".join(PINS).encode()).hexdigest()[:16]


def ensure(log=print) -> Path:
    """The venv's python, creating or updating the venv when needed (about 30 s with a warm pip cache)."""
    stamp = VENV / ".pins"
    if python().exists() and stamp.exists() and stamp.read_text().strip() == _stamp():
        return python()
    log(f"creating {VENV} with {', '.join(PINS[:2])} ...")
    if not python().exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    subprocess.run([str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS],
                   check=True, stdout=sys.stderr)
    stamp.write_text(_stamp())
    return python()


if __name__ == "__main__":
    print(ensure())
