"""The `uv` binary envsync runs: the one the `uv` package ships, found in one place."""

from __future__ import annotations

import os

from envsync.errors import ToolError


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
