"""A gateway's runtime folder (its kernels' connection files, with their HMAC keys), and the
sweep that ends what a gateway's kernels leave running.

One folder a gateway, `<data dir>/runtime/kernels-<port>`, mode 0700 like its parent, made
empty before the gateway starts and removed once it has stopped, however it stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from envsync import proc

_POLL = 0.02


def for_port(data_dir: Path, port: int) -> Path:
    """The folder of the gateway on `port` for its kernels' connection files."""
    return Path(data_dir) / "runtime" / f"kernels-{int(port)}"


def fresh(path: Path) -> Path:
    """`path` as an empty folder only its owner may enter (0700), its parent 0700 too."""
    for folder in (path.parent, path):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode yields to the umask, and an older folder may be open
    for stale in path.iterdir():  # left by a gateway that died on this port
        _unlink_quietly(stale)
    return path


def remove(path: Path) -> None:
    """Delete a gateway's runtime folder and the connection files in it."""
    if not path.is_dir():
        return
    for entry in path.iterdir():
        _unlink_quietly(entry)
    with contextlib.suppress(OSError):
        path.rmdir()


def sweep(pids: Iterable[int], *, grace: float = 2.0) -> list[int]:
    """End every PID still running: SIGTERM to all, then SIGKILL to those left after `grace`; those left."""
    targets = [p for p in dict.fromkeys(pids) if p != os.getpid() and proc.pid_alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
        for pid in targets:
            proc.signal_pid(pid, sig)
        deadline = time.monotonic() + wait
        while targets and time.monotonic() < deadline:
            time.sleep(_POLL)
            targets = [p for p in targets if proc.pid_alive(p)]
        if not targets:
            break
    return targets


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            for entry in path.iterdir():
                _unlink_quietly(entry)
            path.rmdir()
        else:
            path.unlink()
