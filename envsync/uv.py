"""The `uv` binary envsync runs, and the one place its command lines are built.

Every uv call ignores uv.toml/pyproject settings (`--no-config`) and never downloads
an interpreter (`--no-python-downloads`): what runs is decided by envsync's arguments
and the lock alone, the same on every machine.
"""

from __future__ import annotations

import os

from envsync.errors import ToolError

# The flags every uv command line carries, right after its subcommand.
SHARED_FLAGS = ("--no-config", "--no-python-downloads")


def find() -> str | None:
    """The path of uv's binary, or None when the package or its binary is missing."""
    try:
        import uv

        path = uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None
    return path if os.path.exists(path) else None


def require() -> str:
    """The path of uv's binary; a clear error when it is missing."""
    path = find()
    if path is None:
        raise ToolError("uv is not installed beside envsync", hint="reinstall envsync, which depends on the `uv` package")
    return path


def command(*subcommand: str, offline: bool = False, binary: str | None = None) -> list[str]:
    """`uv <subcommand...>` with the shared flags (and `--offline`); the caller appends the rest.

    `binary` is a uv already found (the installer checked it runs); otherwise `require()`.
    """
    argv = [binary or require(), *subcommand, *SHARED_FLAGS]
    if offline:
        argv.append("--offline")
    return argv
