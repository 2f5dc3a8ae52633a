"""The one place that starts processes.

Nothing else in envsync imports `subprocess`. Commands are argv lists (never a
shell), run with a cleaned environment, and every wait has a deadline.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from envsync.errors import EnvsyncError, ToolError

log = logging.getLogger("envsync.proc")

# Variables that would make a child Python or uv look somewhere other than where we send it.
_SCRUBBED = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PIP_REQUIRE_VIRTUALENV",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_CONSTRAINT",
    "PIP_CONFIG_FILE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "__PYVENV_LAUNCHER__",
)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what redirects Python, pip or uv, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("UV_")}
    # uv's cache location is a user choice worth keeping; every other UV_* setting is ours to pass.
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
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
) -> Result:
    """Run `command` to completion with a deadline; raise ToolError on failure when `check`.

    `on_stderr_line`, when given, receives each stderr line as it arrives (progress).
    """
    argv = [os.fspath(c) for c in command]
    log.debug("run: %s", " ".join(argv))
    child_env = dict(env) if env is not None else clean_env()
    try:
        proc = subprocess.Popen(
            argv,
            env=child_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise ToolError(f"cannot run {argv[0]}: not found", command=argv) from exc
    try:
        if on_stderr_line is None:
            stdout, stderr = proc.communicate(timeout=timeout)
        else:
            stdout, stderr = _stream(proc, timeout, on_stderr_line)
    except subprocess.TimeoutExpired as exc:
        shutdown(proc, interrupt_timeout=0, terminate_timeout=3)
        raise ToolError(
            f"{what or argv[0]} did not finish within {timeout:.0f} s", command=argv
        ) from exc
    except BaseException:
        # Ctrl-C or anything else: the child must not outlive us.
        shutdown(proc, interrupt_timeout=2, terminate_timeout=3)
        raise
    result = Result(argv, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise ToolError(
            f"{what or Path(argv[0]).name} failed (exit {proc.returncode}): {last_line(stderr)}",
            command=argv,
            returncode=proc.returncode,
            stderr=stderr,
        )
    return result


def _stream(
    proc: subprocess.Popen[str], timeout: float, on_line: Callable[[str], None]
) -> tuple[str, str]:
    import threading

    out_chunks: list[str] = []
    err_lines: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    for line in proc.stderr:
        err_lines.append(line)
        on_line(line.rstrip("\n"))
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    reader.join(timeout=5)
    return "".join(out_chunks), "".join(err_lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# uv words its reasons "  ╰─▶ Because …", "Caused by: …" or "cause: …": keep the reason.
_PREFIX = re.compile(r"^(caused by|cause|error|hint):\s*", re.I)
_UNREACHABLE = ("failed to fetch", "error sending request", "connection refused", "dns error", "timed out")


def reason_lines(text: str) -> list[str]:
    """A tool's output as plain non-empty lines, without colour, tree marks or `cause:` prefixes."""
    out = []
    for line in _ANSI.sub("", text).splitlines():
        line = _PREFIX.sub("", line.strip().strip("╰─▶×│").strip()).strip()
        if line:
            out.append(line)
    return out


def last_line(text: str) -> str:
    """The last non-empty line of a tool's output: usually its reason."""
    lines = reason_lines(text)
    return lines[-1] if lines else "no output"


def looks_unreachable(text: str) -> bool:
    """Does a tool's output say the network or the index could not be reached?"""
    lower = text.lower()
    return any(s in lower for s in _UNREACHABLE)


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


PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


def shutdown(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    interrupt_timeout: float = 5.0,
    terminate_timeout: float = 3.0,
    kill_timeout: float = 3.0,
) -> int | None:
    """Stop a child by its PID: SIGINT, then SIGTERM, then SIGKILL, each with a deadline."""
    if proc.poll() is not None:
        return proc.returncode
    steps: list[tuple[int, float]] = []
    if interrupt_timeout > 0:
        steps.append((signal.SIGINT, interrupt_timeout))
    steps.append((signal.SIGTERM, terminate_timeout))
    steps.append((signal.SIGKILL, kill_timeout))
    for sig, deadline in steps:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (and is not a zombie we can see)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def signal_pid(pid: int, sig: int) -> bool:
    """Send `sig` to one PID; False if it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def python_executable() -> str:
    """The interpreter envsync itself runs on."""
    return sys.executable


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
    steps: list[tuple[int, float]] = []
    if interrupt_timeout > 0:
        steps.append((signal.SIGINT, interrupt_timeout))
    steps.append((signal.SIGTERM, terminate_timeout))
    steps.append((signal.SIGKILL, kill_timeout))
    for sig, timeout in steps:
        if not pid_alive(pid) or not signal_pid(pid, sig):
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(poll)
    return not pid_alive(pid)


def child_pids(pid: int) -> list[int]:
    """PIDs whose parent is `pid`, read from /proc (Linux); empty where /proc is absent."""
    # /proc/<pid>/task/*/children needs CONFIG_PROC_CHILDREN, which not every kernel has.
    found: list[int] = []
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return found
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which may itself contain spaces or ")".
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return sorted(found)


# The handle `spawn` returns, for annotations in modules that must not import subprocess.
Popen = subprocess.Popen


def cmdline(pid: int) -> list[str] | None:
    """The command line of a running process, or None when it is gone or not ours to read."""
    import psutil

    try:
        return list(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return None


def start_time(pid: int) -> float | None:
    """When a process started (seconds since the epoch): with the PID, it names one process."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def descendants(pid: int) -> list[int]:
    """Every PID below `pid` in the process tree (children, grandchildren, ...)."""
    import psutil

    try:
        return sorted(p.pid for p in psutil.Process(pid).children(recursive=True))
    except (psutil.Error, OSError):
        return []
