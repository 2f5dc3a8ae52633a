"""Shared pieces of the reliability suite: running the CLI, fingerprints of files, process
accounting, and the figures the suite reports (docs/reliability.md quotes them).

Every test here ends the processes it started by PID; the autouse `no_process_left`
fixture then proves that no child of the test process is still running.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from envsync.cli import main
from tests.support.processes import child_env, cmdline, descendants, end_by_pid
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ENVSYNC = VENV_BIN / "envsync"
DOCUMENTED_ERROR_CODES = {1, 2, 3}

# Figures a run measured, printed at the end of the session (see pytest_terminal_summary).
FIGURES: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "load: bounded load test on loopback (20 kernels, 2,000 executes)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("envsync reliability figures")
    for key in sorted(FIGURES):
        terminalreporter.write_line(f"{key}: {json.dumps(FIGURES[key])}")
    target = os.environ.get("ENVSYNC_RELIABILITY_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=1, sort_keys=True) + "\n")


def record(key: str, value: Any) -> None:
    """Keep a measured figure for the end-of-run summary."""
    FIGURES[key] = value


def count(key: str, n: int = 1) -> None:
    FIGURES[key] = FIGURES.get(key, 0) + n


# --- running the CLI ------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float = 0.0
    max_rss_mb: float | None = None

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("ERROR")]

    @property
    def hint(self) -> str:
        return "\n".join(ln for ln in self.err.splitlines() if ln.startswith("hint:"))


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    """`envsync ARGV` in this process, as `main()`; stdout and stderr captured."""
    capsys.readouterr()
    start = time.perf_counter()
    code = main([str(a) for a in argv])
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err, seconds)


def run_console(
    argv: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
    drop_root_override: bool = False,
    memory_limit_mb: int | None = None,
) -> Run:
    """The installed `envsync` console script as a user runs it; wall time and peak RSS measured.

    `drop_root_override`: when the tests run as root, file modes do not bind (root has
    CAP_DAC_OVERRIDE); the child then runs under `setpriv` without those capabilities.
    """
    cmd: list[str] = [str(ENVSYNC), *[str(a) for a in argv]]
    if drop_root_override and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is missing: file modes cannot be made to bind")
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--", *cmd]

    def limit() -> None:
        if memory_limit_mb is not None:
            size = memory_limit_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    start = time.perf_counter()
    child = subprocess.Popen(
        cmd,
        preexec_fn=limit if memory_limit_mb is not None else None,  # noqa: PLW1509 - rlimit only
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else child_env(),
        cwd=cwd,
    )
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        chunks[name] = stream.read()
        stream.close()

    readers = [
        threading.Thread(target=drain, args=(n, s), daemon=True)
        for n, s in (("out", child.stdout), ("err", child.stderr))
    ]
    for t in readers:
        t.start()
    # wait4 instead of Popen.wait: it also gives this child's own peak memory.
    timer = threading.Timer(timeout, lambda: end_by_pid(child.pid, grace=1.0))
    timer.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join(timeout=10)
    out = chunks.get("out", b"").decode("utf-8", "replace")
    err = chunks.get("err", b"").decode("utf-8", "replace")
    if seconds >= timeout:
        raise AssertionError(f"`envsync {' '.join(map(str, argv))}` did not answer within {timeout:.0f} s")
    return Run(child.returncode, out, err, seconds, max_rss_mb=usage.ru_maxrss / 1024)


def assert_one_clean_error(r: Run, *, codes: set[int] | int = 1, text: str | None = None) -> str:
    """What a user must see for bad input: one `ERROR` line, no traceback, a documented exit code."""
    wanted = {codes} if isinstance(codes, int) else codes
    assert wanted <= DOCUMENTED_ERROR_CODES
    assert r.code in wanted, f"exit {r.code}, wanted {wanted}\nstderr:\n{r.err}"
    assert len(r.error_lines) == 1, r.err
    assert "Traceback" not in r.err, r.err
    # `ERROR unexpected <Exception>` is how the CLI reports a bug it did not foresee.
    assert not r.error_lines[0].startswith("ERROR unexpected"), r.err
    if text is not None:
        assert text in r.error_lines[0], r.err
    return r.error_lines[0]


# --- files ----------------------------------------------------------------------------------


def sha256_of(path: Path) -> str | None:
    """sha256 of a file's bytes, 'dir' for a folder, 'link:<target>' for a symlink, None if absent."""
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_dir():
        return "dir"
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def tree_digest(folder: Path, *, skip: Sequence[str] = ("home",)) -> dict[str, str | None]:
    """Every entry under `folder` (envsync's home aside) with its sha256: proof nothing changed."""
    out: dict[str, str | None] = {}
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        if rel_root.parts and rel_root.parts[0] in skip:
            continue
        for name in [*dirs, *files]:
            rel = rel_root / name
            if rel.parts[0] in skip:
                continue
            path = Path(root) / name
            if path.is_fifo() or path.is_char_device():
                out[str(rel)] = "special"
            else:
                out[str(rel)] = sha256_of(path)
    return out


# --- processes ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    """After each test: no process that this test process started is still running."""
    before = set(descendants(os.getpid()))
    yield
    left = lambda: [p for p in descendants(os.getpid()) if p not in before]  # noqa: E731
    if not wait_until(lambda: not left(), timeout=15.0, poll=0.05):
        stray = left()
        cmds = {p: cmdline(p) for p in stray}
        for pid in stray:  # clean up for the next test, by PID
            end_by_pid(pid, grace=1.0)
        pytest.fail(f"processes left running after the test: {cmds}")


# --- notebooks ------------------------------------------------------------------------------


@pytest.fixture
def good_nb(tmp_path: Path, locked_template: Path, settings: Any) -> Path:
    """A private copy of the locked notebook in this test's folder (home: tmp_path/home)."""
    path = tmp_path / "analysis.ipynb"
    shutil.copyfile(locked_template, path)
    return path


# --- an index the test controls ---------------------------------------------------------------


class ControlledIndex:
    """The local index's files over HTTP on 127.0.0.1, which a test can hold, slow, kill and revive.

    - `hold()`: requests for paths starting with `gate_prefix` wait until `release()`;
      `requested` is set when the first one arrives.
    - `die()`: the server stops listening and held requests are dropped without an answer,
      as when the network goes away mid-download; `revive()` listens again on the same port.
    """

    def __init__(self, root: Path, *, gate_prefix: str = "/files/", slow: float = 0.0) -> None:
        import http.server

        self.root = root
        self.gate_prefix = gate_prefix
        self.slow = slow
        self.open = threading.Event()
        self.open.set()
        self.requested = threading.Event()
        self.dead = False
        self.hits = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, directory=str(root), **k)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.hits += 1
                if self.path.startswith(outer.gate_prefix):
                    outer.requested.set()
                    outer.open.wait(timeout=120)
                    if outer.dead:
                        self.close_connection = True
                        return  # no answer at all: the connection just ends
                    time.sleep(outer.slow)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self._handler = Handler
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        import http.server

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/simple"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self) -> None:
        self.requested.clear()
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    def die(self) -> None:
        self.dead = True
        self.server.shutdown()
        self.server.server_close()
        self.open.set()

    def revive(self) -> None:
        self.dead = False
        self._listen()

    def stop(self) -> None:
        self.open.set()
        if not self.dead:
            self.server.shutdown()
            self.server.server_close()
            self.dead = True


@pytest.fixture
def controlled_index(local_index: LocalIndex) -> Iterator[ControlledIndex]:
    index = ControlledIndex(local_index.root)
    yield index
    index.stop()


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Adopt orphans here (as systemd --user does on a desktop), so a killed child's own
    children stay visible below this process and can be ended by PID."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_child_subreaper = 36
    if prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper")
    try:
        yield
    finally:
        prctl(pr_set_child_subreaper, 0, 0, 0, 0)


def end_orphans(known: Sequence[int] = ()) -> list[int]:
    """SIGKILL, by PID, every process below this one that no Popen here owns; reap them."""
    stray = [p for p in descendants(os.getpid()) if p not in known]
    for pid in stray:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in stray:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return stray


def spawn_envsync(
    argv: Sequence[str | Path],
    *,
    log_dir: Path,
    env: dict[str, str] | None = None,
    python_code: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `envsync ARGV` (or `python -c CODE ARGV`) in the background; output goes to files."""
    log_dir.mkdir(parents=True, exist_ok=True)
    n = len(list(log_dir.glob("*.out")))
    out = open(log_dir / f"{n}.out", "wb")  # noqa: SIM115 - closed right after the spawn
    err = open(log_dir / f"{n}.err", "wb")  # noqa: SIM115
    head = [sys.executable, "-c", python_code] if python_code else [str(ENVSYNC)]
    try:
        child = subprocess.Popen(
            [*head, *[str(a) for a in argv]],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env if env is not None else child_env(),
            cwd=log_dir,
        )
    finally:
        out.close()
        err.close()
    child.out_path = log_dir / f"{n}.out"  # type: ignore[attr-defined]
    child.err_path = log_dir / f"{n}.err"  # type: ignore[attr-defined]
    return child


def output_of(child: subprocess.Popen[bytes]) -> tuple[str, str]:
    return (
        child.out_path.read_text(errors="replace"),  # type: ignore[attr-defined]
        child.err_path.read_text(errors="replace"),  # type: ignore[attr-defined]
    )


def kill9(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL one child, as `kill -9 PID` would; what it started is left to its fate."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


# --- envsync launch in the background ----------------------------------------------------------


def launch(tmp_path: Path, nb: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return spawn_envsync(["launch", nb, "--json", *extra], log_dir=tmp_path / "logs", env=env)


def ready_line(child: subprocess.Popen[bytes], timeout: float = 90.0) -> dict[str, Any] | None:
    """The JSON line `launch --json` prints when it serves; None if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out, _ = output_of(child)
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and "url" in data:
                    return data
        if child.poll() is not None:
            return None
        time.sleep(0.05)
    raise AssertionError(f"launch neither served nor exited in {timeout:.0f} s: {output_of(child)}")


def stop_launch(child: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM by PID (launch stops its gateway and kernels), then SIGKILL if it hangs."""
    if child.poll() is None:
        os.kill(child.pid, signal.SIGTERM)
    try:
        return child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill9(child)
        return None
