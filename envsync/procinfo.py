"""Facts about running processes by PID (through psutil), and a signal to one PID.

`proc` uses these to stop process trees and re-exports the public ones; nothing here
starts a process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    # Imported where used: psutil costs the CLI's start-up tens of milliseconds.
    import psutil

_T = TypeVar("_T")


def signal_pid(pid: int, sig: int) -> bool:
    """Send `sig` to one PID; False if it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _ask(pid: int, question: Callable[[psutil.Process], _T]) -> _T | None:
    """`question` answered about the process `pid`, or None when it is gone or not ours to read."""
    import psutil

    try:
        return question(psutil.Process(pid))
    except (psutil.Error, OSError):
        return None


def running(p: psutil.Process) -> bool:
    """Is `p` still running (not a zombie)? A process we may not inspect counts as running."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def tree(pid: int) -> list[psutil.Process]:
    """Every process below `pid`; empty when it is gone."""
    return _ask(pid, lambda p: p.children(recursive=True)) or []


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists and is not a zombie."""
    return pid > 0 and bool(_ask(pid, running))


def child_pids(pid: int) -> list[int]:
    """PIDs whose parent is `pid`; empty when `pid` is gone."""
    return sorted(_ask(pid, lambda p: [c.pid for c in p.children()]) or [])


def descendants(pid: int) -> list[int]:
    """Every PID below `pid` in the process tree (children, grandchildren, ...)."""
    return sorted(p.pid for p in tree(pid))


def cmdline(pid: int) -> list[str] | None:
    """The command line of a running process, or None when it is gone or not ours to read."""
    return _ask(pid, lambda p: list(p.cmdline()))


def start_time(pid: int) -> float | None:
    """When a process started (seconds since the epoch): with the PID, it names one process."""
    return _ask(pid, lambda p: float(p.create_time()))


def child_subreaper(on: bool) -> bool | None:
    """Make this process adopt its orphaned descendants (Linux) or stop; the previous setting, None if unsupported."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_child_subreaper, pr_get_child_subreaper = 36, 37
    previous = ctypes.c_int(0)
    if prctl(pr_get_child_subreaper, ctypes.byref(previous), 0, 0, 0) != 0:
        return None
    if prctl(pr_set_child_subreaper, int(on), 0, 0, 0) != 0:
        return None
    return bool(previous.value)
