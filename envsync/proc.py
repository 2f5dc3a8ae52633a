"""The one place that starts processes.

Nothing else in envsync imports `subprocess` (`procfork.py` only forks this process to
share CPU-bound checks). Commands are argv lists (never a shell), run with a cleaned
environment, and every wait has a deadline. Facts about a PID come from `procinfo.py`
(re-exported here); a tool's failure text is read by `tooloutput.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envsync.errors import EnvsyncError, ToolError
from envsync.procinfo import child_pids as child_pids
from envsync.procinfo import cmdline as cmdline
from envsync.procinfo import descendants as descendants
from envsync.procinfo import pid_alive as pid_alive
from envsync.procinfo import running, tree
from envsync.procinfo import signal_pid as signal_pid
from envsync.procinfo import start_time as start_time
from envsync.tooloutput import LineReader, last_line

if TYPE_CHECKING:
    # Imported where used: psutil costs the CLI's start-up tens of milliseconds.
    import psutil

log = logging.getLogger("envsync.proc")

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
# The handle `spawn` returns, for annotations in modules that must not import subprocess.
Popen = subprocess.Popen

_POLL = 0.02
_CHUNK = 65536

# Variables that would make a child Python or uv look somewhere other than where we send it.
_SCRUBBED = (
    *("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PIP_REQUIRE_VIRTUALENV"),
    *("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_CONFIG_FILE"),
    *("VIRTUAL_ENV", "CONDA_PREFIX", "__PYVENV_LAUNCHER__"),
)


_UV_KEPT = ("UV_CACHE_DIR", "UV_HTTP_RETRIES")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what redirects Python, pip or uv, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("UV_")}
    # uv's cache location and its retry count are the user's choices to keep (a machine with
    # a flaky or a closed network tunes them); every other UV_* setting is ours to pass.
    env.update({k: os.environ[k] for k in _UV_KEPT if k in os.environ})
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    """What a finished command left behind."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
    check: bool = True,
    what: str | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    on_stdout_line: Callable[[str], None] | None = None,
    stdin_data: bytes | None = None,
) -> Result:
    """Run `command` to completion with a deadline; raise ToolError on failure when `check`.

    `stdin_data`, when given, is written to the command's stdin (then closed) while its output
    is read, so neither side can block the other.

    `on_stderr_line` and `on_stdout_line`, when given, receive each line of that stream as it
    arrives (progress), in the calling thread; the Result still holds all the output.
    Past the deadline the command and every process it started are stopped.
    """
    argv = [os.fspath(c) for c in command]
    log.debug("run: %s", " ".join(argv))
    child_env = dict(env) if env is not None else clean_env()
    try:
        child = subprocess.Popen(
            argv,
            env=child_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise ToolError(f"cannot run {argv[0]}: not found", command=argv) from exc
    try:
        stdout, stderr = _collect(
            child, time.monotonic() + timeout, on_stdout_line, on_stderr_line, stdin_data
        )
    except subprocess.TimeoutExpired:
        _stop_tree(child, interrupt_timeout=0, terminate_timeout=3)
        raise ToolError(f"{what or argv[0]} did not finish within {timeout:.0f} s", command=argv) from None
    except BaseException:
        # Ctrl-C or anything else: the child must not outlive us.
        _stop_tree(child, interrupt_timeout=2, terminate_timeout=3)
        raise
    finally:
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    returncode = child.returncode
    if check and returncode != 0:
        raise ToolError(
            f"{what or Path(argv[0]).name} failed (exit {returncode}): {last_line(stderr)}",
            command=argv,
            returncode=returncode,
            stderr=stderr,
        )
    return Result(argv, returncode, stdout, stderr)


def _collect(
    child: subprocess.Popen[bytes],
    deadline: float,
    on_out: Callable[[str], None] | None,
    on_err: Callable[[str], None] | None,
    feed: bytes | None = None,
) -> tuple[str, str]:
    """Read both pipes (and write `feed` to stdin) until they close and the child exits.

    Raises TimeoutExpired past `deadline`.
    """
    assert child.stdout is not None and child.stderr is not None
    out, err = LineReader(), LineReader()
    pending = memoryview(feed or b"")
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ, (out, on_out))
        selector.register(child.stderr, selectors.EVENT_READ, (err, on_err))
        if child.stdin is not None:
            os.set_blocking(child.stdin.fileno(), False)
            selector.register(child.stdin, selectors.EVENT_WRITE, None)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(child.args, 0)
            for key, _ in selector.select(remaining):
                if key.data is None:  # stdin is writable
                    try:
                        pending = pending[os.write(key.fd, pending[:_CHUNK]) :]
                    except BrokenPipeError:
                        pending = pending[:0]  # the command stopped reading: its exit says why
                    if not pending:
                        selector.unregister(key.fileobj)
                        assert child.stdin is not None  # registered only when piped
                        child.stdin.close()
                    continue
                data = os.read(key.fd, _CHUNK)
                if not data:
                    selector.unregister(key.fileobj)
                text, on_line = key.data
                lines = text.feed(data, final=not data)
                if on_line is not None:
                    for line in lines:
                        on_line(line)
    child.wait(timeout=max(0.0, deadline - time.monotonic()))
    return out.text(), err.text()


def spawn(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    new_session: bool = True,
    parent_death_signal: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived child (the gateway). The caller must end it with `shutdown`.

    With `parent_death_signal` (Linux), the child gets that signal if we die first, even
    by SIGKILL, so it can never outlive the command that started it.
    """
    argv = [os.fspath(c) for c in command]
    log.debug("spawn: %s", " ".join(argv))
    try:
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE if stderr is None else stderr,
            start_new_session=new_session,
            preexec_fn=parent_death_hook(parent_death_signal, os.getpid()) if parent_death_signal else None,  # noqa: PLW1509
        )
    except OSError as exc:
        raise EnvsyncError(f"cannot start {argv[0]}: {exc.strerror}") from exc


def parent_death_hook(sig: int, parent_pid: int) -> Callable[[], None] | None:
    """A Popen `preexec_fn` that has Linux send `sig` to the child when `parent_pid` dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def hook() -> None:
        # Runs in the forked child before exec; the setting survives exec.
        prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _escalate(
    send: Callable[[int], bool],
    gone: Callable[[float], bool],
    *,
    interrupt_timeout: float,
    terminate_timeout: float,
    kill_timeout: float,
) -> bool:
    """SIGINT, SIGTERM, then SIGKILL, each given its deadline to end the target; True once it has.

    `send` signals the target and returns False when nothing is left to signal; `gone(t)`
    waits up to t seconds for the target to end. A zero `interrupt_timeout` skips SIGINT.
    """
    steps = [(signal.SIGINT, interrupt_timeout)] if interrupt_timeout > 0 else []
    steps += [(signal.SIGTERM, terminate_timeout), (signal.SIGKILL, kill_timeout)]
    return any(not send(sig) or gone(timeout) for sig, timeout in steps)


def _signal_popen(child: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int) -> bool:
    if child.poll() is not None:
        return False
    try:
        child.send_signal(sig)
    except ProcessLookupError:
        return False
    return True


def _until(condition: Callable[[], bool], timeout: float, poll: float = _POLL) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def shutdown(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    interrupt_timeout: float = 5.0,
    terminate_timeout: float = 3.0,
    kill_timeout: float = 3.0,
) -> int | None:
    """Stop a child by its PID: SIGINT, then SIGTERM, then SIGKILL, each with a deadline."""
    _escalate(
        lambda sig: _signal_popen(proc, sig),
        lambda timeout: _until(lambda: proc.poll() is not None, timeout),
        interrupt_timeout=interrupt_timeout,
        terminate_timeout=terminate_timeout,
        kill_timeout=kill_timeout,
    )
    return proc.poll()


def shutdown_pid(
    pid: int,
    *,
    interrupt_timeout: float = 5.0,
    terminate_timeout: float = 3.0,
    kill_timeout: float = 3.0,
    poll: float = 0.02,
) -> bool:
    """Stop a process we did not start (no Popen handle): SIGINT, SIGTERM, SIGKILL with deadlines.

    Returns True once the PID is gone. Used for gateways recorded by another envsync run.
    """
    return _escalate(
        lambda sig: pid_alive(pid) and signal_pid(pid, sig),
        lambda timeout: _until(lambda: not pid_alive(pid), timeout, poll),
        interrupt_timeout=interrupt_timeout,
        terminate_timeout=terminate_timeout,
        kill_timeout=kill_timeout,
    ) or not pid_alive(pid)


def _stop_tree(child: subprocess.Popen[bytes], *, interrupt_timeout: float, terminate_timeout: float) -> None:
    """Stop a child and every process below it (uv starts its own), each signal sent to all of them."""
    import psutil

    below: dict[int, psutil.Process] = {}

    def send(sig: int) -> bool:
        # Look again before each signal: the children of a process that just died move to
        # init and drop out of its tree, so they are remembered from earlier looks.
        if child.poll() is None:  # once reaped, its PID may already name another process
            below.update((p.pid, p) for p in tree(child.pid))
        for p in list(below.values()):
            with contextlib.suppress(psutil.Error):
                below.update((c.pid, c) for c in p.children(recursive=True))
        sent = _signal_popen(child, sig)
        for p in list(below.values()):
            try:
                p.send_signal(sig)  # psutil checks the PID still names the same process
                sent = True
            except psutil.NoSuchProcess:
                del below[p.pid]
            except psutil.AccessDenied:
                continue
        return sent

    def ended() -> bool:
        return child.poll() is not None and not any(running(p) for p in below.values())

    _escalate(
        send,
        lambda timeout: _until(ended, timeout),
        interrupt_timeout=interrupt_timeout,
        terminate_timeout=terminate_timeout,
        kill_timeout=3.0,
    )
