"""What every scenario of the harness shares: timing, alternation, child processes, the machine."""

from __future__ import annotations

import http.client
import os
import platform
import secrets
import socket
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsync import proc, procinfo

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POLL = 0.02
READY_TIMEOUT = 120.0

Row = dict[str, Any]


_STARTED = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since the run started."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def uv_bin() -> str:
    import uv

    return str(uv.find_uv_bin())


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """envsync's clean child environment, with bytecode writing on as on a user's machine."""
    env = proc.clean_env(extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Tools that find uv on PATH (juv, marimo --sandbox) get this venv's uv.
    env["PATH"] = os.pathsep.join([str(Path(uv_bin()).parent), env.get("PATH", "")])
    return env


def timed(fn: Callable[[], object]) -> float:
    # Dirty pages of the previous measure are written out first, so no measure pays for another's.
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str], cwd: Path | None = None,
        timeout: float = 1800) -> proc.Result:
    return proc.run(argv, env=env, cwd=cwd, timeout=timeout)


def run_timed(argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str], cwd: Path | None = None,
              timeout: float = 1800) -> float:
    """Wall time of one whole process; it must succeed."""
    return timed(lambda: run(argv, env=env, cwd=cwd, timeout=timeout))


@dataclass
class Series:
    """Samples of several measures taken in one loop, alternating their order."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def alternate(self, variants: Mapping[str, Callable[[], float]], reps: int, *, warmup: bool) -> None:
        """Each variant once unmeasured (warm-up), then `reps` rounds, every other one reversed."""
        names = list(variants)
        if warmup:
            for name in names:
                log(f"  warm-up: {name}")
                variants[name]()
        for i in range(reps):
            for name in names if i % 2 == 0 else reversed(names):
                self.samples.setdefault(name, []).append(variants[name]())
            log("  round {}/{}: {}".format(
                i + 1, reps, ", ".join(f"{n} {self.samples[n][-1]:.3f}s" for n in names)))

    def row(self, key: str, label: str, **extra: Any) -> Row:
        return stats(key, label, self.samples[key], **extra)


def stats(key: str, label: str, samples: Sequence[float], **extra: Any) -> Row:
    """A table row: median, min and max of `samples` (seconds)."""
    return {
        "key": key,
        "label": label,
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "n": len(samples),
        "samples_s": [round(s, 4) for s in samples],
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_token() -> str:
    return secrets.token_urlsafe(32)


def wait_http_200(port: int, path: str, token: str | None, child: proc.Popen[bytes], deadline: float) -> None:
    """Poll GET `path` on 127.0.0.1 until 200; fail when the child exits or the deadline passes."""
    headers = {"Authorization": f"token {token}"} if token else {}
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args!r} exited with {child.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path, headers=headers)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(POLL)
    raise RuntimeError(f"no 200 on {path} before the deadline")


def stop_tree(child: proc.Popen[bytes]) -> None:
    """End a child and everything it started, each by its PID."""
    try:
        below = procinfo.descendants(child.pid)
    except Exception:  # noqa: BLE001 (gone already: nothing below it to end)
        below = []
    proc.shutdown(child, interrupt_timeout=20)
    for pid in below:
        proc.shutdown_pid(pid, interrupt_timeout=2)


def time_to_200(argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str], port: int, path: str,
                token: str | None, cwd: Path | None = None) -> float:
    """Seconds from spawning `argv` to the first 200 on GET `path`; the process tree is then ended."""
    start = time.perf_counter()
    child = proc.spawn(argv, env=env, cwd=cwd, stdout=proc.DEVNULL, stderr=proc.DEVNULL)
    try:
        wait_http_200(port, path, token, child, time.monotonic() + READY_TIMEOUT)
        return time.perf_counter() - start
    finally:
        stop_tree(child)


def tool_venv(where: Path, packages: Sequence[str]) -> Path:
    """A throwaway venv with `packages` from PyPI (through uv); its bin folder."""
    env = child_env()
    run([uv_bin(), "venv", "--no-config", "--quiet", "--python", sys.executable, where], env=env, timeout=300)
    run([uv_bin(), "pip", "install", "--no-config", "--quiet", "--python", where / "bin" / "python", *packages],
        env=env, timeout=900)
    return where / "bin"


def version_of(argv: Sequence[str | os.PathLike[str]]) -> str:
    try:
        out = run(argv, env=child_env(), timeout=60)
    except Exception as exc:  # noqa: BLE001 (a version is a label: its absence is shown, not fatal)
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[-1]


def machine(note: str = "") -> dict[str, Any]:
    """Cores, memory, load, and the versions of everything measured."""
    import psutil

    from envsync import __version__

    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "uv": version_of([uv_bin(), "--version"]),
        "kernel_gateway": version_of([sys.executable, "-c", "import kernel_gateway; print(kernel_gateway.__version__)"]),
        "envsync": __version__,
        "note": note,
    }


def dir_bytes(path: Path, *, own_only: bool = False) -> int:
    """Disk used under `path` (blocks); with `own_only`, only files no other path links."""
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            if not own_only or st.st_nlink == 1:
                total += st.st_blocks * 512
    return total
