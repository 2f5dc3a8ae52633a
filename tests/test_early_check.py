"""`check` and `sync` start their file check as the command starts: same answers, whatever the hint says."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from envsync import procfork
from envsync.env import early_check, files
from tests.support.processes import child_env, run_envsync
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex


@pytest.fixture
def built(tmp_path: Path, locked_template: Path, local_index: LocalIndex) -> Iterator[tuple[dict[str, str], Path, Path]]:
    """(environment, notebook, env) after a `sync` of a locked notebook."""
    nb = tmp_path / "analysis.ipynb"
    shutil.copy(locked_template, nb)
    env = child_env(ENVSYNC_HOME=str(tmp_path / "home"), ENVSYNC_ALLOWED_INDEXES=local_index.url)
    synced = run_envsync(env, "sync", nb, "--json")
    assert synced.returncode == 0, synced.stderr
    yield env, nb, Path(json.loads(synced.stdout)["env"])


def hints(env: dict[str, str]) -> dict[str, str]:
    return json.loads((Path(env["ENVSYNC_HOME"]) / "state" / early_check.HINTS).read_text())


def a_module(env_dir: Path) -> Path:
    return next((env_dir / "lib").glob("python3.*/site-packages/alpha/__init__.py"))


def touch_ns(path: Path, delta: int) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + delta))


def test_a_check_started_early_still_sees_each_change_made_since_the_last(built) -> None:
    env, nb, env_dir = built
    assert run_envsync(env, "check", nb).returncode == 0
    assert hints(env) == {str(nb): str(env_dir)}  # the next check starts early
    module = a_module(env_dir)

    touch_ns(module, 1000)  # same bytes, another mtime: an edit in place
    changed = run_envsync(env, "check", nb)
    assert changed.returncode == 3 and f"{module.relative_to(env_dir).as_posix()} (modified)" in changed.stderr

    touch_ns(module, -1000)
    assert run_envsync(env, "check", nb).returncode == 0
    module.unlink()
    gone = run_envsync(env, "check", nb, "--json")
    assert gone.returncode == 3
    [difference] = json.loads(gone.stdout)["differences"]
    assert difference["kind"] == "modified" and "missing" in json.dumps(difference)


def test_a_hint_to_another_env_changes_nothing_but_time(built, tmp_path: Path) -> None:
    env, nb, env_dir = built
    clean = run_envsync(env, "check", nb, "--json")
    # A copy of the env, record and all, with one file changed: a child that checks it
    # finds a difference that the env this notebook uses does not have.
    decoy = tmp_path / "decoy"
    shutil.copytree(env_dir, decoy, symlinks=True, copy_function=shutil.copy2)
    touch_ns(a_module(decoy), 1000)
    state = Path(env["ENVSYNC_HOME"]) / "state"
    for hint in (json.dumps({str(nb): str(decoy)}), "{not json", json.dumps([str(decoy)]), json.dumps({str(nb): 7})):
        (state / early_check.HINTS).write_text(hint)
        again = run_envsync(env, "check", nb, "--json")
        assert (again.returncode, again.stdout) == (0, clean.stdout), hint
        assert hints(env)[str(nb)] == str(env_dir)  # put right for the next run


def test_a_repair_checks_again_after_it_and_does_not_reuse_the_early_answer(built) -> None:
    env, nb, env_dir = built
    assert run_envsync(env, "check", nb).returncode == 0
    a_module(env_dir).write_text("broken = True\n")
    repaired = run_envsync(env, "sync", nb, "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["drift"]["clean"]
    assert run_envsync(env, "check", nb).returncode == 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["check", "nb.ipynb"], (None, "nb.ipynb")),
        (["--home", "/h", "sync", "nb.ipynb", "--json"], ("/h", "nb.ipynb")),
        (["-v", "sync", "--python", "3.12", "--backend=pip", "nb.ipynb"], (None, "nb.ipynb")),
        (["sync", "nb.ipynb", "--home=/h", "--register", "user"], ("/h", "nb.ipynb")),
        (["check", "--deep", "nb.ipynb"], None),  # hashes every file: nothing to start early
        (["launch", "nb.ipynb"], None),
        (["add", "nb.ipynb", "check"], None),
        (["check"], None),
    ],
)
def test_only_check_and_sync_of_a_notebook_start_early(argv: list[str], expected: tuple[str | None, str] | None) -> None:
    got = early_check._command(argv)
    assert got == (None if expected is None else (expected[0], os.path.abspath(expected[1])))


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ENVSYNC_JOBS", "2")
    monkeypatch.setattr(procfork, "_other_threads", lambda: False)  # other tests' servers take no lock here
    yield
    early_check.finish()


@pytest.mark.usefixtures("forking")
def test_the_early_answer_is_the_fast_checks_for_that_record_only(built) -> None:
    env, nb, env_dir = built
    home = env["ENVSYNC_HOME"]
    assert run_envsync(env, "check", nb).returncode == 0
    touch_ns(a_module(env_dir), 1000)
    record = files.load_columns(env_dir)
    assert record is not None
    key = files.record_key(env_dir)

    early_check.start(["--home", home, "check", str(nb)])
    problems, counts, seconds = early_check.take(env_dir, key) or ({}, {}, 0.0)
    assert problems == files.fast_check(env_dir, record) != {} and seconds > 0
    assert counts == {name: len(cols.paths) for name, cols in record.items()}
    assert early_check.take(env_dir, key) is None  # taken once
    early_check.finish()

    assert key is not None
    early_check.start(["--home", home, "check", str(nb)])
    assert early_check.take(env_dir, (key[0], key[1], key[2], key[3] + 1)) is None  # another record


def test_work_started_ahead_runs_in_a_child_and_a_cancel_ends_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import psutil

    monkeypatch.setenv("ENVSYNC_JOBS", "2")
    monkeypatch.setattr(procfork, "_other_threads", lambda: False)
    before = {c.pid for c in psutil.Process().children()}
    got = procfork.Ahead(lambda x: (os.getpid(), x + 1), 1).result()
    assert got is not None and got[0][1] == 2 and got[0][0] != os.getpid()

    started = tmp_path / "started"
    slow = procfork.Ahead(lambda p: (Path(p).write_text(str(os.getpid())), time.sleep(60)), str(started))
    wait_until(lambda: started.exists() and started.read_text() != "", timeout=30)
    slow.cancel()
    assert not psutil.pid_exists(int(started.read_text()))
    assert {c.pid for c in psutil.Process().children()} == before
