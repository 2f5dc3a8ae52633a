"""Process trees, PIDs and child environments, read with psutil; everything ends by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from envsync import proc
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """The environment envsync gives its own children, with PYTHONPATH at this checkout, plus `extra`."""
    return proc.clean_env({"PYTHONPATH": str(REPO), **extra})


def run_envsync(
    env: dict[str, str], *argv: str | Path, cwd: Path | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """`python -m envsync ARGV` as a user runs it, in the folder holding ENVSYNC_HOME unless `cwd`; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "envsync", *map(str, argv)],
        env=env,
        cwd=cwd or Path(env["ENVSYNC_HOME"]).parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _running(p: psutil.Process) -> bool:
    try:
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie only waits to be reaped)."""
    if pid <= 0:
        return False
    try:
        return _running(psutil.Process(pid))
    except psutil.Error:
        return False


def children_of(pid: int) -> list[int]:
    """Live PIDs whose parent is `pid`."""
    try:
        below = psutil.Process(pid).children()
    except psutil.Error:
        return []
    return [p.pid for p in below if _running(p)]


def descendants(pid: int) -> list[int]:
    """Live (non-zombie) PIDs below `pid`: children, grandchildren, ..."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return [p.pid for p in below if _running(p)]


def cmdline(pid: int) -> str:
    """A process's command line as one string (first 200 characters), '?' when unreadable."""
    try:
        return " ".join(psutil.Process(pid).cmdline())[:200]
    except psutil.Error:
        return "?"


def end_by_pid(pid: int, *, grace: float = 3.0) -> None:
    """SIGTERM one PID (never a name), then SIGKILL if it is still there after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not alive(pid), timeout=grace, poll=0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each PID that is still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every PID is gone; those still alive at the deadline."""
    wait_until(lambda: not any(alive(p) for p in pids), timeout=timeout)
    return [p for p in pids if alive(p)]


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for servers that need it named up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_bytecode_compiles(env: Path, timeout: float = 120.0) -> None:
    """Wait until the background bytecode compile a build started in `env` has ended.

    A build leaves one running (it writes `__pycache__` into the env after the ready
    marker); a test that compares the env's tree before and after a reuse waits for it.
    """
    python = str(env / "bin" / "python")
    pids = []
    for pid in descendants(os.getpid()):
        with contextlib.suppress(psutil.Error, IndexError):
            if psutil.Process(pid).cmdline()[0] == python:
                pids.append(pid)
    left = wait_gone(pids, timeout)
    assert not left, f"bytecode compile still running after {timeout:.0f} s: {left}"
