"""Reading the files other tools wrote: one error for an unreadable file, one for bad TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from envsync.errors import EnvsyncError, NotebookError


def read_text(path: Path) -> str:
    """The file's text; NotebookError naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotebookError(f"cannot read {path}: {exc.strerror}") from None


def read_toml(path: Path) -> dict[str, Any]:
    """The file parsed as TOML; EnvsyncError naming the file when it is not valid TOML."""
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise EnvsyncError(f"{path} is not valid TOML: {exc}") from None
