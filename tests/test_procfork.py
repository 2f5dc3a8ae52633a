"""Work split over cores by fork: the same results as in one process, and no child left behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from envsync import procfork


def _pid_and_double(part: list[int]) -> tuple[int, list[int]]:
    return os.getpid(), [2 * x for x in part]


def _children_of_this_process() -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process().children(recursive=True)}


@pytest.fixture
def two_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVSYNC_JOBS", "2")
    # The test process may run other tests' server threads; the parts given to children
    # here take no lock, so they may fork anyway.
    monkeypatch.setattr(procfork, "_other_threads", lambda: False)


@pytest.mark.usefixtures("two_jobs")
def test_parts_after_the_first_run_in_children_and_come_back_in_order() -> None:
    before = _children_of_this_process()
    out = procfork.split_map(_pid_and_double, [[1, 2], [3], [4, 5, 6]])
    assert [r[1] for r in out] == [[2, 4], [6], [8, 10, 12]]
    assert out[0][0] == os.getpid() and {out[1][0], out[2][0]}.isdisjoint({os.getpid()})
    assert _children_of_this_process() == before  # every child was waited for


@pytest.mark.usefixtures("two_jobs")
def test_a_part_whose_child_fails_is_run_again_here() -> None:
    parent = os.getpid()

    def fails_in_a_child(part: list[int]) -> list[int]:
        if os.getpid() != parent:
            raise RuntimeError("lost in the child")
        return [x + 1 for x in part]

    assert procfork.split_map(fails_in_a_child, [[1], [2], [3]]) == [[2], [3], [4]]


def test_no_fork_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVSYNC_JOBS", "2")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        out = procfork.split_map(_pid_and_double, [[1], [2]])
    finally:
        stop.set()
        other.join()
    assert [r[0] for r in out] == [os.getpid(), os.getpid()]


def test_one_job_runs_everything_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVSYNC_JOBS", "1")
    assert procfork.cores() == 1
    assert procfork.balanced([5, 1, 3], lambda x: x, procfork.cores()) == [[5, 3, 1]]


def test_parts_are_balanced_by_weight() -> None:
    parts = procfork.balanced([9, 1, 1, 1, 8, 2], lambda x: x, 2)
    assert sorted(sum(p) for p in parts) == [11, 11]
    assert sorted(x for p in parts for x in p) == [1, 1, 1, 2, 8, 9]


@pytest.mark.usefixtures("two_jobs")
def test_files_changed_in_every_part_are_found(tmp_path: Path) -> None:
    from envsync.env import files

    env = tmp_path / "env"
    record: files.Record = {}
    for d in range(4):
        paths = []
        for i in range(3):
            f = env / f"d{d}" / f"f{i}.py"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"{d}{i}")
            paths.append(f"d{d}/f{i}.py")
        st = [(env / p).stat() for p in paths]
        record[f"dist{d}"] = files.Columns(paths, [s.st_size for s in st], [s.st_mtime_ns for s in st], "")
    assert files.fast_check(env, record) == {}
    for d in range(4):  # one change in each distribution, whichever part it falls in
        (env / f"d{d}" / "f1.py").write_text("changed, longer")
    (env / "d2" / "f2.py").unlink()
    problems = files.fast_check(env, record)
    assert list(problems) == ["dist0", "dist1", "dist2", "dist3"]  # in distribution order
    assert {n: sorted((p.path, str(p.problem)) for p in ps) for n, ps in problems.items()} == {
        "dist0": [("d0/f1.py", "modified")],
        "dist1": [("d1/f1.py", "modified")],
        "dist2": [("d2/f1.py", "modified"), ("d2/f2.py", "missing")],
        "dist3": [("d3/f1.py", "modified")],
    }


@pytest.mark.usefixtures("two_jobs")
def test_a_child_does_not_run_the_parents_signal_handlers(tmp_path: Path) -> None:
    import signal

    ran = tmp_path / "handler-ran"
    parent = os.getpid()

    def handler(_sig: int, _frame: object) -> None:
        ran.write_text(str(os.getpid()))

    def terminated_in_a_child(part: list[int]) -> list[int]:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)  # as a launch's SIGTERM would reach its whole group
        return part

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        assert procfork.split_map(terminated_in_a_child, [[1], [2]]) == [[1], [2]]
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not ran.exists()


@pytest.mark.usefixtures("two_jobs")
def test_a_part_that_cannot_fork_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process_to_spare() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(procfork.os, "fork", no_process_to_spare)
    before = len(os.listdir("/proc/self/fd"))
    out = procfork.split_map(_pid_and_double, [[1], [2], [3]])
    assert out == [(os.getpid(), [2]), (os.getpid(), [4]), (os.getpid(), [6])]
    assert len(os.listdir("/proc/self/fd")) == before  # no pipe left open


def _pid_and_threads(x: int) -> tuple[int, int, int]:
    return os.getpid(), threading.active_count(), x * 3


def _fail(x: int) -> int:
    raise ValueError(f"bad {x}")


@pytest.mark.usefixtures("two_jobs")
def test_a_helper_runs_work_in_its_own_single_threaded_copy_and_ends_by_its_pid() -> None:
    helper = procfork.Helper.start()
    assert helper.pid is not None
    try:
        worker = threading.Thread(target=threading.Event().wait, args=(0.5,), daemon=True)
        worker.start()  # the parent runs a thread now; the helper was forked before it
        pid, threads, value = helper.run(_pid_and_threads, 7)
        assert (value, threads) == (21, 1) and pid == helper.pid != os.getpid()
        # Work that fails there is run here, so its exception keeps its type and words.
        with pytest.raises(ValueError, match="bad 2"):
            helper.run(_fail, 2)
        assert helper.run(_pid_and_threads, 1)[0] == helper.pid  # and the helper still serves
    finally:
        pid = helper.pid
        helper.close()
    assert helper.pid is None and pid not in _children_of_this_process()
    assert helper.run(_pid_and_threads, 2)[0] == os.getpid()  # closed: the work runs here


@pytest.mark.usefixtures("two_jobs")
def test_a_helper_that_died_is_replaced_by_this_process() -> None:
    helper = procfork.Helper.start()
    assert helper.pid is not None
    os.kill(helper.pid, 9)
    assert helper.run(_pid_and_threads, 2) == (os.getpid(), threading.active_count(), 6)
    assert helper.pid is None  # reaped, and not asked again


def test_no_helper_is_forked_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVSYNC_JOBS", "2")
    monkeypatch.setattr(procfork, "_other_threads", lambda: True)
    helper = procfork.Helper.start()
    assert helper.pid is None and helper.run(_pid_and_threads, 1)[0] == os.getpid()



@pytest.mark.usefixtures("two_jobs")
@pytest.mark.parametrize(("short_of", "refused_after"), [("pipe", 0), ("pipe", 1), ("fork", 0)])
def test_no_pipe_or_process_to_spare_means_the_work_runs_here_and_no_descriptor_leaks(
    short_of: str, refused_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`refused_after`: how many pipes of one start are given before one is refused (a helper asks for two)."""
    import errno

    real = {"pipe": os.pipe, "fork": os.fork}[short_of]
    given = {"n": 0}

    def short(*args: object) -> object:
        given["n"] += 1
        if given["n"] > refused_after:
            given["n"] = 0
            raise OSError(errno.EMFILE if short_of == "pipe" else errno.EAGAIN, "none to spare")
        return real(*args)

    open_before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, short_of, short)
    here = os.getpid()
    if refused_after == 0:  # split_map and Ahead ask for one pipe each
        assert procfork.split_map(lambda part: (os.getpid(), part), [[1], [2]]) == [(here, [1]), (here, [2])]
        assert procfork.Ahead(lambda x: x, 1).result() is None
    helper = procfork.Helper.start()
    assert helper.pid is None and helper.run(os.getpid) == here
    assert len(os.listdir("/proc/self/fd")) == open_before
