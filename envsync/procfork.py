"""CPU-bound work shared with this machine's other cores by forking this process.

The file checks cost one `stat` (or one hash) a file plus the interpreter's work around
it. Threads take turns on the interpreter lock (two threads made the 12,000-file check
slower, not faster); a forked copy of the process does not. `split_map` runs the first
part here and every other part in a child, whose result comes back pickled through a
pipe. It falls back to running every part here, in order, when fork cannot be used
safely: no `fork`, one core, or another thread running (a child would inherit that
thread's locks in whatever state they were). A child that fails is not trusted: its
part is run again here. Children are ended by their PID if this process is interrupted.

`Ahead` starts one piece of work in a child at once, for a result wanted later (the file
check a `check` starts before importing its own code); it is taken, or the child ended.

A process that runs threads (a launch serving its gateway) starts a `Helper` first: a
copy of itself forked while it is still alone, which runs work for it on request and,
being single-threaded, may split that work with `split_map`. Any failure of the helper
runs the work here instead.
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
                _abandon(child)


def _end(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _abandon(child: tuple[int, int]) -> None:
    """Close the pipe of a child whose result is not wanted, and end it by its PID."""
    with contextlib.suppress(OSError):
        os.close(child[1])
    _end(child[0])


def _own_signals(on_interrupt: signal.Handlers) -> None:
    """A forked copy's handlers: the parent's (a launch stopping its gateway on SIGTERM) are not its own."""
    signal.signal(signal.SIGINT, on_interrupt)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _start(fn: Callable[[T], R], part: T) -> tuple[int, int] | None:
    """A child working on `part`: its PID and the pipe its result comes through; None when none could start."""
    forked = _fork_with_pipes(1)
    if forked is None:  # this part runs here
        return None
    pid, [(read_fd, write_fd)] = forked
    if pid == 0:
        code = 1
        try:
            _own_signals(signal.SIG_DFL)
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


def _fork_with_pipes(count: int) -> tuple[int, list[tuple[int, int]]] | None:
    """`count` pipes, then a fork: (PID, 0 in the child; the pipes), or None with nothing left open."""
    pipes: list[tuple[int, int]] = []
    try:
        for _ in range(count):
            pipes.append(os.pipe())
        return os.fork(), pipes
    except OSError:  # no pipe or process to spare (EMFILE, EAGAIN, ENOMEM)
        for fd in (fd for pipe in pipes for fd in pipe):
            os.close(fd)
        return None


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


class Ahead:
    """`fn(arg)` started now in a forked child, its result taken later (or never).

    For work whose answer is likely to be needed once this process has done other
    things (importing, reading); nothing is started when fork cannot be used safely.
    """

    def __init__(self, fn: Callable[[T], Any], arg: T) -> None:
        self._child = _start(fn, arg) if _can_fork() else None

    def result(self) -> tuple[Any] | None:
        """The child's result in a 1-tuple (waiting for it), or None when it failed or none ran; once."""
        child, self._child = self._child, None
        return _collect(*child) if child is not None else None

    def cancel(self) -> None:
        """End the child by its PID when its result was not taken."""
        child, self._child = self._child, None
        if child is not None:
            _abandon(child)


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


class Helper:
    """A forked copy of this process that runs `fn(*args)` on request (see the module's text).

    Start it before any thread: `Helper.start()` gives a helper that runs everything here
    when fork cannot be used. `close()` ends the copy by its PID; it also ends by itself
    when this process goes (its request pipe closes).
    """

    def __init__(self, pid: int | None = None, send: int = -1, receive: int = -1) -> None:
        self.pid = pid
        self._send, self._receive = send, receive
        self._lock = threading.Lock()

    @classmethod
    def start(cls) -> Helper:
        if not _can_fork():
            return cls()
        forked = _fork_with_pipes(2)
        if forked is None:
            return cls()
        pid, [requests, replies] = forked
        if pid == 0:
            try:
                os.close(requests[1])
                os.close(replies[0])
                _serve(requests[0], replies[1])
            finally:
                os._exit(0)
        os.close(requests[0])
        os.close(replies[1])
        return cls(pid, requests[1], replies[0])

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        """`fn(*args)`, in the helper when it is alive, else here.

        When `fn` raises in the helper it is run again here, so that its exception is
        raised with its own type; a helper that cannot be reached is not asked again.
        """
        import pickle

        with self._lock:
            if self.pid is not None:
                try:
                    request = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
                except (pickle.PicklingError, TypeError, AttributeError):
                    request = None  # not something a pipe can carry: run it here
                if request is not None:
                    try:
                        _write_frame(self._send, request)
                        ok, value = pickle.loads(_read_frame(self._receive))  # noqa: S301 - our own copy wrote it
                    except (OSError, EOFError, pickle.UnpicklingError, ValueError):
                        self._stop()
                    else:
                        if ok:
                            return value  # type: ignore[no-any-return]
        return fn(*args)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        for fd in (self._send, self._receive):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._send = self._receive = -1
        if self.pid is not None:
            _end(self.pid)
            self.pid = None


def _serve(requests: int, replies: int) -> None:
    import pickle

    _own_signals(signal.SIG_IGN)  # Ctrl-C at the terminal is for the launch, which ends this copy itself
    while True:
        try:
            fn, args = pickle.loads(_read_frame(requests))  # noqa: S301 - written by our parent
        except (EOFError, OSError):
            return  # the parent closed the pipe, or went away
        try:
            reply = (True, fn(*args))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which runs the work itself
            reply = (False, f"{type(exc).__name__}: {exc}")
        _write_frame(replies, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


def _write_frame(fd: int, data: bytes) -> None:
    view = memoryview(len(data).to_bytes(8, "big") + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_frame(fd: int) -> bytes:
    size = int.from_bytes(_read_exactly(fd, 8), "big")
    return _read_exactly(fd, size)


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
