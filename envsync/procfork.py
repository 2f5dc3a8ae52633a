"""CPU-bound work shared with this machine's other cores by forking this process.

The file checks cost one `stat` (or one hash) a file plus the interpreter's work around
it. Threads take turns on the interpreter lock (two threads made the 12,000-file check
slower, not faster); a forked copy of the process does not. `split_map` runs the first
part here and every other part in a child, whose result comes back pickled through a
pipe. It falls back to running every part here, in order, when fork cannot be used
safely: no `fork`, one core, or another thread running (a child would inherit that
thread's locks in whatever state they were). A child that fails is not trusted: its
part is run again here. Children are ended by their PID if this process is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cores() -> int:
    """How many parts are worth making: `ENVSYNC_JOBS` when set, else the cores this process may run on."""
    jobs = os.environ.get("ENVSYNC_JOBS", "")
    if jobs.isdigit() and int(jobs) > 0:
        return int(jobs)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _other_threads() -> bool:
    return threading.active_count() > 1


def _can_fork() -> bool:
    return hasattr(os, "fork") and cores() > 1 and not _other_threads()


def split_map(fn: Callable[[T], R], parts: Sequence[T]) -> list[R]:
    """`[fn(part) for part in parts]`, the parts after the first each in a forked child."""
    if len(parts) < 2 or not _can_fork():
        return [fn(p) for p in parts]
    children: list[tuple[int, int] | None] = []
    try:
        for part in parts[1:]:
            children.append(_start(fn, part))
        results = [fn(parts[0])]
        for part in parts[1:]:
            child = children.pop(0)
            got = _collect(*child) if child is not None else None
            results.append(got[0] if got is not None else fn(part))
        return results
    finally:
        for child in children:  # interrupted: no child outlives the work it was given
            if child is not None:
                with contextlib.suppress(OSError):
                    os.close(child[1])
                _end(child[0])


def _end(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _start(fn: Callable[[T], R], part: T) -> tuple[int, int] | None:
    """A child working on `part`: its PID and the pipe its result comes through; None when none could start."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # no process to spare (EAGAIN, ENOMEM): this part runs here
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:
        code = 1
        try:
            # The parent's handlers (a launch stopping its gateway on SIGTERM) are not the child's.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            os.close(read_fd)
            import pickle

            data = pickle.dumps(fn(part), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)  # no atexit handlers, no second flush of the parent's buffers
    os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, fd: int) -> tuple[Any] | None:
    """The child's result (in a 1-tuple), or None when it failed; the child is reaped either way."""
    import pickle

    try:
        with os.fdopen(fd, "rb") as src:
            data = src.read()
    except BaseException:
        _end(pid)
        raise
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return None
    try:
        return (pickle.loads(data),)  # noqa: S301 - written by our own forked child
    except (pickle.UnpicklingError, EOFError, ValueError):
        return None


def balanced(items: Sequence[T], weight: Callable[[T], int], n: int) -> list[list[T]]:
    """`items` in up to `n` parts of about equal total weight (heaviest first, each to the lightest part)."""
    parts: list[list[T]] = [[] for _ in range(max(1, n))]
    totals = [0] * len(parts)
    weighed = sorted(((weight(item), i) for i, item in enumerate(items)), key=lambda wi: wi[0], reverse=True)
    for w, i in weighed:  # each weight taken once (a weight may be a stat)
        lightest = totals.index(min(totals))
        parts[lightest].append(items[i])
        totals[lightest] += w
    return [p for p in parts if p]
