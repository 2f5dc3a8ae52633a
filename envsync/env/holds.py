"""Which envs are in use: one OS-locked file per user of an env (a running gateway).

    <envs_dir>/.holds/<env dir>/<pid>-<rand>.hold

The OS drops a lock when its holder dies, even by kill -9, so a hold file nobody
has locked is stale, and whoever finds it can lock it and remove it. A hold file is
locked before it gets its visible name, so a checker never mistakes a live hold
being created for a stale one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from envsync.settings import Settings


class EnvHold:
    """While held, `store.gc` leaves the env alone and other locks of its project get their own kernel.

    A running gateway holds one for its whole life; take it with `store.hold`, which
    checks under the env's lock that the env is still there.
    """

    def __init__(self, settings: Settings, path: Path) -> None:
        folder = holds_dir(settings, path)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        tmp = folder / f".{name}.tmp"
        self._fd: int | None = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        lock_descriptor(self._fd, blocking=False)
        # Visible only once locked: a checker can never take a live hold for a stale one.
        self.file = folder / f"{name}.hold"
        os.replace(tmp, self.file)
        self.path = path

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.file)
        with contextlib.suppress(OSError):
            unlock_descriptor(self._fd)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> EnvHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holds_dir(settings: Settings, path: Path) -> Path:
    return settings.envs_dir / ".holds" / path.name


def in_use(settings: Settings, path: Path) -> bool:
    """True while a live process holds the env at `path`; holds of dead processes are removed."""
    busy = False
    for file in holds_dir(settings, path).glob("*.hold"):
        try:
            fd = os.open(file, os.O_RDWR)
        except OSError:
            continue
        try:
            if lock_descriptor(fd, blocking=False):
                with contextlib.suppress(OSError):
                    os.unlink(file)
                unlock_descriptor(fd)
            else:
                busy = True
        finally:
            os.close(fd)
    return busy
