"""Atomic file writes: temp file in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int | None = None, like: os.stat_result | None = None
) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix.

    `like`: the stat of the file being replaced; the new one gets its owner, group and mode
    (PermissionError, and nothing replaced, when the owner or group cannot be given).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if like is not None:
                _take_owner(fh.fileno(), like)
                mode = stat.S_IMODE(like.st_mode)
            if mode is not None:
                # Through the descriptor: not subject to the umask, and always our temp file.
                _chmod(fh.fileno(), tmp, mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _take_owner(fd: int, like: os.stat_result) -> None:
    if not hasattr(os, "fchown"):
        return
    now = os.fstat(fd)
    if (now.st_uid, now.st_gid) != (like.st_uid, like.st_gid):
        # Before the mode: a change of owner clears set-id bits the mode may carry.
        os.fchown(fd, like.st_uid, like.st_gid)


def _chmod(fd: int, tmp: str, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:
        os.chmod(tmp, mode)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stat_each(paths: Iterable[str | None]) -> list[os.stat_result | None]:
    """Each path's stat, None where there is no path or no file (one tight loop: a check of
    12,000 files spends most of its time here)."""
    do_stat = os.stat
    out: list[os.stat_result | None] = []
    append = out.append
    for path in paths:
        if path is None:
            append(None)
            continue
        try:
            append(do_stat(path))
        except OSError:
            append(None)
    return out
