"""envsync.proc with real child processes: deadlines, pipes, the stop sequence, process facts.

Every child is a `python -c` program; each one a test starts is ended by its PID and
checked gone before the test returns.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from envsync import proc
from envsync.errors import ToolError

PYTHON = sys.executable
DEADLINE = 30.0

# Starts a grandchild that sleeps, records "<own pid> <grandchild pid>", then sleeps in silence.
SILENT_TREE = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    fh.write(f"{os.getpid()} {grandchild.pid}")
os.replace(tmp, sys.argv[1])
time.sleep(120)
"""

# Ignores SIGINT and SIGTERM, writing down each one it gets; says it is ready by a file.
STUBBORN = """
import signal, sys, time
from pathlib import Path
log = Path(sys.argv[1])
def note(sig, _frame):
    with log.open("a") as fh:
        fh.write(f"{sig}\\n")
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
Path(sys.argv[2]).write_text("ready")
time.sleep(120)
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def end_pids(pids: list[int]) -> None:
    """SIGKILL each PID still alive, then check every one is gone."""
    for pid in pids:
        if proc.pid_alive(pid):
            proc.signal_pid(pid, signal.SIGKILL)
    wait_for(lambda: not any(proc.pid_alive(p) for p in pids), "test processes to end")


@pytest.fixture
def started() -> Iterator[list[proc.Popen[bytes]]]:
    """Children a test spawns, each shut down by PID (and reaped) when it ends."""
    children: list[proc.Popen[bytes]] = []
    yield children
    for child in children:
        proc.shutdown(child, interrupt_timeout=0, terminate_timeout=2)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert all(c.poll() is not None for c in children)


def spawn(started: list[proc.Popen[bytes]], code: str, *args: str) -> proc.Popen[bytes]:
    child = proc.spawn(
        [PYTHON, "-c", code, *args], env=proc.clean_env(), stdout=proc.DEVNULL, stderr=proc.DEVNULL
    )
    started.append(child)
    return child


# --- run: deadlines --------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_a_silent_child_past_its_deadline_is_stopped_with_its_children(
    tmp_path: Path, streamed: bool
) -> None:
    pidfile = tmp_path / "pids"
    lines: list[str] = []
    started = time.monotonic()
    try:
        with pytest.raises(ToolError) as failed:
            proc.run(
                [PYTHON, "-c", SILENT_TREE, str(pidfile)],
                timeout=1,
                what="the sleeper",
                on_stderr_line=lines.append if streamed else None,
            )
        elapsed = time.monotonic() - started
        assert str(failed.value) == "the sleeper did not finish within 1 s"
        assert failed.value.command[:2] == [PYTHON, "-c"]
        pids = [int(p) for p in pidfile.read_text().split()]
        assert len(pids) == 2
        assert not any(proc.pid_alive(p) for p in pids), "the child or its grandchild outlived the deadline"
        assert elapsed < 10  # SIGTERM ends both at once; a hang would have run into pytest's timeout
        assert lines == []
    finally:
        end_pids([int(p) for p in pidfile.read_text().split()] if pidfile.exists() else [])


def test_the_timeout_message_names_the_command_when_no_what_is_given(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    try:
        with pytest.raises(ToolError, match=r"did not finish within 1 s") as failed:
            proc.run([PYTHON, "-c", SILENT_TREE, str(pidfile)], timeout=1)
        assert str(failed.value).startswith(f"{PYTHON} did not finish")
    finally:
        end_pids([int(p) for p in pidfile.read_text().split()] if pidfile.exists() else [])


def test_an_interrupt_while_streaming_stops_the_child_before_it_propagates() -> None:
    code = "import os, sys, time; print(os.getpid(), file=sys.stderr, flush=True); time.sleep(120)"
    seen: list[int] = []

    def interrupt(line: str) -> None:
        seen.append(int(line))
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            proc.run([PYTHON, "-c", code], timeout=DEADLINE, on_stderr_line=interrupt)
        assert len(seen) == 1 and not proc.pid_alive(seen[0])
    finally:
        end_pids(seen)


# --- run: pipes ------------------------------------------------------------------------------

LOUD = """
import sys
for i in range(int(sys.argv[1])):
    sys.stdout.write("o" * 100 + "\\n")
    sys.stderr.write(f"line {i} " + "e" * 90 + "\\n")
"""


@pytest.mark.parametrize("streamed", [False, True])
def test_megabytes_on_both_pipes_arrive_whole_and_in_order(streamed: bool) -> None:
    count = 40_000  # about 4 MB on each pipe, far beyond what a pipe buffers
    lines: list[str] = []
    result = proc.run(
        [PYTHON, "-c", LOUD, str(count)], timeout=120, on_stderr_line=lines.append if streamed else None
    )
    expected = [f"line {i} " + "e" * 90 for i in range(count)]
    assert result.returncode == 0
    assert result.stdout == ("o" * 100 + "\n") * count
    assert result.stderr == "".join(f"{line}\n" for line in expected)
    assert lines == (expected if streamed else [])


def test_output_reads_as_text_mode_would() -> None:
    # A two-byte character across the read-chunk boundary, CRLF and bare CR, no final newline.
    code = (
        "import sys; e = sys.stderr.buffer; e.write(b'x' + 'é'.encode() * 40000 + b'\\n');"
        "e.write(b'a\\r\\nb\\rc\\xff'); sys.stdout.buffer.write(b'out\\r\\n')"
    )
    lines: list[str] = []
    result = proc.run([PYTHON, "-c", code], timeout=DEADLINE, on_stderr_line=lines.append)
    assert lines == ["x" + "é" * 40000, "a", "b", "c\ufffd"]
    assert result.stderr == "x" + "é" * 40000 + "\na\nb\nc\ufffd"
    assert result.stdout == "out\n"


def test_a_failing_command_raises_with_its_exit_code_and_reason() -> None:
    code = "import sys; print('working', file=sys.stderr); print('error: it broke', file=sys.stderr); sys.exit(3)"
    with pytest.raises(ToolError) as failed:
        proc.run([PYTHON, "-c", code], timeout=DEADLINE)
    name = Path(PYTHON).name
    assert str(failed.value) == f"{name} failed (exit 3): it broke"
    assert failed.value.returncode == 3 and "working" in failed.value.stderr
    unchecked = proc.run([PYTHON, "-c", code], timeout=DEADLINE, check=False)
    assert unchecked.returncode == 3 and unchecked.stdout == ""


def test_a_missing_program_is_a_tool_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="cannot run .*: not found"):
        proc.run([tmp_path / "no-such-tool"], timeout=DEADLINE)


def test_the_child_gets_a_cleaned_environment_and_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONSTARTUP", "/nowhere")
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")
    code = "import os; print(os.getcwd()); print('PYTHONSTARTUP' in os.environ, 'UV_INDEX_URL' in os.environ)"
    out = proc.run([PYTHON, "-c", code], cwd=tmp_path, timeout=DEADLINE).stdout.splitlines()
    assert Path(out[0]).resolve() == tmp_path.resolve() and out[1] == "False False"
    given = proc.run(
        [PYTHON, "-c", "import os; print(os.environ['ONLY'])"], env={"ONLY": "this"}, timeout=DEADLINE
    )
    assert given.stdout == "this\n"


# --- the stop sequence -----------------------------------------------------------------------


def start_stubborn(started: list[proc.Popen[bytes]], tmp_path: Path) -> tuple[proc.Popen[bytes], Path]:
    log, ready = tmp_path / "signals", tmp_path / "ready"
    child = spawn(started, STUBBORN, str(log), str(ready))
    wait_for(ready.exists, "the child to install its handlers")
    return child, log


def test_shutdown_ends_a_child_that_ignores_sigint_and_sigterm(
    started: list[proc.Popen[bytes]], tmp_path: Path
) -> None:
    child, log = start_stubborn(started, tmp_path)
    code = proc.shutdown(child, interrupt_timeout=0.3, terminate_timeout=0.3, kill_timeout=DEADLINE)
    assert code == -signal.SIGKILL
    assert not proc.pid_alive(child.pid)
    assert log.read_text().split() == [str(int(signal.SIGINT)), str(int(signal.SIGTERM))]
    assert proc.shutdown(child) == -signal.SIGKILL  # already ended: nothing sent, same answer


def test_shutdown_without_sigint_starts_at_sigterm(started: list[proc.Popen[bytes]], tmp_path: Path) -> None:
    child, log = start_stubborn(started, tmp_path)
    assert proc.shutdown(child, interrupt_timeout=0, terminate_timeout=0.3) == -signal.SIGKILL
    assert log.read_text().split() == [str(int(signal.SIGTERM))]


def test_shutdown_pid_ends_a_child_that_ignores_sigint_and_sigterm(
    started: list[proc.Popen[bytes]], tmp_path: Path
) -> None:
    child, log = start_stubborn(started, tmp_path)
    # Not reaped by anyone until the fixture's shutdown: a zombie counts as gone.
    assert proc.shutdown_pid(child.pid, interrupt_timeout=0.3, terminate_timeout=0.3, kill_timeout=DEADLINE)
    assert not proc.pid_alive(child.pid)
    assert log.read_text().split() == [str(int(signal.SIGINT)), str(int(signal.SIGTERM))]
    assert proc.shutdown(child) == -signal.SIGKILL


def test_shutdown_pid_of_a_gone_process_is_true_at_once(started: list[proc.Popen[bytes]]) -> None:
    child = spawn(started, "pass")
    wait_for(lambda: child.poll() is not None, "the child to exit by itself")
    assert proc.shutdown(child) == 0
    assert proc.shutdown_pid(child.pid, interrupt_timeout=DEADLINE)


# --- process facts ---------------------------------------------------------------------------


def test_descendants_and_child_pids_find_a_grandchild(
    started: list[proc.Popen[bytes]], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    child = spawn(started, SILENT_TREE, str(pidfile))
    try:
        wait_for(pidfile.exists, "the grandchild to start")
        own, grandchild = (int(p) for p in pidfile.read_text().split())
        assert own == child.pid
        assert proc.descendants(child.pid) == [grandchild]
        assert proc.child_pids(child.pid) == [grandchild]
        assert child.pid in proc.descendants(os.getpid())
        assert proc.child_pids(grandchild) == [] and proc.descendants(grandchild) == []
    finally:
        end_pids([int(p) for p in pidfile.read_text().split()[1:]] if pidfile.exists() else [])


def test_facts_of_a_live_then_dead_process(started: list[proc.Popen[bytes]], tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = "import sys, time; from pathlib import Path; Path(sys.argv[1]).write_text('1'); time.sleep(120)"
    child = spawn(started, code, str(ready))
    wait_for(ready.exists, "the child to start")
    assert proc.pid_alive(child.pid)
    assert proc.cmdline(child.pid) == [PYTHON, "-c", code, str(ready)]
    born = proc.start_time(child.pid)
    assert born is not None and abs(born - time.time()) < 300
    proc.signal_pid(child.pid, signal.SIGKILL)
    wait_for(lambda: not proc.pid_alive(child.pid), "the killed child to count as gone (a zombie)")
    assert child.poll() is not None  # reaped here; the PID now names nothing
    assert proc.cmdline(child.pid) is None
    assert proc.start_time(child.pid) is None
    assert proc.descendants(child.pid) == [] and proc.child_pids(child.pid) == []
    assert not proc.signal_pid(child.pid, 0)


def test_pid_alive_of_impossible_pids() -> None:
    assert not proc.pid_alive(0) and not proc.pid_alive(-1)
    assert proc.pid_alive(os.getpid())


def test_stdout_lines_reach_their_own_callback_as_they_arrive() -> None:
    code = (
        "import sys\n"
        "for i in range(2000):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "print('tail', end='')\n"
        "sys.exit(1)\n"
    )
    out: list[str] = []
    err: list[str] = []
    with pytest.raises(ToolError) as failed:
        proc.run([PYTHON, "-c", code], timeout=DEADLINE, on_stderr_line=err.append, on_stdout_line=out.append)
    assert out == [f"out {i}" for i in range(2000)] + ["tail"]
    assert err == [f"err {i}" for i in range(2000)]
    assert failed.value.stderr == "".join(f"{line}\n" for line in err)
    both = proc.run([PYTHON, "-c", "print('out')"], timeout=DEADLINE, on_stdout_line=out.append)
    assert both.stdout == "out\n" and out[-1] == "out"


def test_input_is_written_while_the_output_is_read_so_neither_side_blocks() -> None:
    # 3 MB each way: far more than a pipe holds, so writing all first would block for ever.
    r = proc.run(
        [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"],
        stdin_data=b"x" * 3_000_000,
        timeout=30,
    )
    assert len(r.stdout) == 3_000_000


def test_a_command_that_reads_no_input_still_finishes_with_its_own_exit() -> None:
    r = proc.run(["sh", "-c", "exit 3"], stdin_data=b"y" * 1_000_000, check=False, timeout=30)
    assert r.returncode == 3
