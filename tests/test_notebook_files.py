"""Notebook files that cannot be lost, blocked or crash a reader.

- Odd but valid JSON (a 5,000-digit integer, a lone surrogate escape, NaN, 1e999, a key
  twice) is one clear error, or read as Jupyter reads it, the same way by every command,
  and while `launch` serves, a notebook that turned unreadable is a note, not the end.
- The write lock lives in a folder only this user can write; a link or a lock planted in
  the shared temp folder changes nothing, and a lock another envsync holds is one error
  naming it, within a bounded wait.
- A rewrite keeps the notebook's owner, group and mode, or is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from envsync.cli import main
from envsync.notebook import file as notebook
from envsync.notebook import jsontext, writelock
from tests.manifests import edit_manifest, manifest_of
from tests.support.processes import REPO, alive, children_of, end_by_pid, free_port
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex

BIG_INT = "7" * 5000


@pytest.fixture(autouse=True)
def private_lock_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's lock files under its own cache folder; no runtime folder unless a test sets one."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return cache


@pytest.fixture
def nb(tmp_path: Path, locked_template: Path, settings: Any) -> Path:
    path = tmp_path / "analysis.ipynb"
    shutil.copyfile(locked_template, path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("ERROR")]


def one_error(code: int, err: str, text: str) -> str:
    lines = errors(err)
    assert code == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not lines[0].startswith("ERROR unexpected"), err
    assert text in lines[0], err
    return lines[0]


def with_cell(path: Path, execution_count: str, outputs: str = "[]") -> Path:
    """The notebook with one code cell whose execution_count and outputs are raw JSON text."""
    text = path.read_text(encoding="utf-8")
    cell = (
        '{"cell_type": "code", "execution_count": ' + execution_count + ', "id": "odd", '
        '"metadata": {}, "outputs": ' + outputs + ', "source": []}'
    )
    new = text.replace('"cells": []', '"cells": [' + cell + "]", 1)
    assert new != text
    path.write_text(new, encoding="utf-8")
    return path


# --- 8. odd JSON -------------------------------------------------------------------------------

REFUSED = {
    "integer-5000-digits": (BIG_INT, "holds an integer of 5,000 digits"),
    "lone-surrogate": ('"\\ud800"', "holds a lone surrogate escape (\\ud800)"),
    "nested-300-deep": ("[" * 300 + "]" * 300, "nested too deeply"),
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("command", ["show", "add", "lock"])
def test_odd_json_in_a_cell_is_one_error_naming_the_file(
    case: str, command: str, nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value, text = REFUSED[case]
    with_cell(nb, value)
    before = nb.read_bytes()
    argv: list[str | Path] = {"show": ["show", nb], "add": ["add", nb, "beta"], "lock": ["lock", nb]}[command]
    code, out, err = run(capsys, *argv)
    line = one_error(code, err, text)
    assert str(nb) in line
    assert out == ""
    assert nb.read_bytes() == before


ACCEPTED = {
    "nan": ("NaN", "[]"),
    "infinity": ("-Infinity", "[]"),
    "huge-float": ("1e999", "[]"),
    "key-twice-in-an-output": (
        "1",
        '[{"output_type": "execute_result", "execution_count": 1, "metadata": {}, '
        '"data": {"text/plain": "a", "text/plain": "b"}}]',
    ),
    "paired-surrogates": ('"\\ud83d\\ude00"', "[]"),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_odd_values_jupyter_reads_are_read_by_every_command_and_kept_byte_for_byte(
    case: str, nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_cell(nb, *ACCEPTED[case])
    before = nb.read_bytes()
    old_manifest = manifest_of(nb)
    for argv in (["show", nb], ["show", nb, "--json"], ["lock", nb, "--check"]):
        code, _, err = run(capsys, *argv)
        assert code == 0, err
    code, _, err = run(capsys, "add", nb, "beta")
    assert code == 0, err
    after = nb.read_bytes()
    # Putting the old manifest back gives the original file: nothing but the manifest moved.
    assert notebook.splice_manifest(after.decode(), old_manifest).encode() == before


@pytest.mark.parametrize(
    ("old", "new", "text"),
    [
        ('"index": ', '"index": "http://evil.example/simple", "index": ', "metadata.envsync has the key 'index' twice"),
        ('"envsync": {', '"envsync": {"x": 1}, "envsync": {', "metadata has the key 'envsync' twice"),
        ('"nbformat": 4', '"nbformat": 4, "nbformat": 4', "the top-level object has the key 'nbformat' twice"),
    ],
    ids=["in-the-manifest", "envsync-in-metadata", "top-level"],
)
def test_a_key_twice_where_envsync_reads_is_refused_by_show_and_add_alike(
    old: str, new: str, text: str, nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = nb.read_text(encoding="utf-8")
    assert old in raw
    nb.write_text(raw.replace(old, new, 1), encoding="utf-8")
    before = nb.read_bytes()
    for argv in (["show", nb], ["add", nb, "beta"]):
        code, out, err = run(capsys, *argv)
        one_error(code, err, text)
        assert out == ""
    assert nb.read_bytes() == before


def test_manifest_nested_past_any_real_manifest_is_one_error(nb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_manifest(nb, lambda m: m["dependencies"].append(json.loads("[" * 200 + "]" * 200)))
    code, _, err = run(capsys, "show", nb)
    one_error(code, err, "metadata.envsync is nested more than 32 levels deep")


def test_nesting_refused_at_one_depth_by_every_caller_however_deep_its_stack() -> None:
    def at_stack_depth(frames: int, text: str) -> str:
        if frames:
            return at_stack_depth(frames - 1, text)
        try:
            jsontext.loads(text, "x.ipynb")
        except Exception as exc:  # noqa: BLE001 (the type is the assertion)
            return type(exc).__name__
        return "read"

    doc = '{"cells": [' + "[" * 257 + "]" * 257 + '], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    ok = '{"cells": [' + "[" * 254 + "]" * 254 + '], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    for frames in (0, 300, 600):
        assert at_stack_depth(frames, doc) == "NotebookError"
        assert at_stack_depth(frames, ok) == "read"


# --- 8. launch keeps serving when the notebook turns unreadable ---------------------------------


class Launch:
    """`envsync launch NB --json` as a process: stdout lines in a queue, stderr collected."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "envsync", "launch", *argv],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, Any] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        self.threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append), daemon=True),
        ]
        for t in self.threads:
            t.start()

    @staticmethod
    def _pump(stream: Any, sink: Any) -> None:
        for line in stream:
            sink(line)
        sink(None)

    @property
    def stderr(self) -> str:
        return "".join(x for x in self.err if x)

    def ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.strip():
                self.info = json.loads(line)
                assert self.info is not None
                return self.info
        raise AssertionError(f"launch was not ready within {timeout:.0f} s; stderr:\n{self.stderr}")


@contextlib.contextmanager
def launching(nb: Path, env: dict[str, str]) -> Iterator[Launch]:
    launch = Launch([str(nb), "--json", "--port", str(free_port())], env, nb.parent)
    try:
        yield launch
    finally:
        gateway = [launch.info["pid"]] if launch.info else []
        if launch.proc.poll() is None:
            launch.proc.send_signal(signal.SIGINT)
            try:
                launch.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                end_by_pid(launch.proc.pid)
                launch.proc.wait(timeout=10)
        for pid in gateway:
            for child in children_of(pid):
                end_by_pid(child)
            if alive(pid):
                end_by_pid(pid)
        for t in launch.threads:
            t.join(timeout=5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_launch_keeps_serving_when_the_notebook_gets_a_5000_digit_integer(
    tmp_path: Path, locked_template: Path, local_index: LocalIndex
) -> None:
    nb = tmp_path / "nb.ipynb"
    shutil.copyfile(locked_template, nb)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "ENVSYNC_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    env.update(ENVSYNC_HOME=str(tmp_path / "home"), ENVSYNC_ALLOWED_INDEXES=local_index.url, PYTHONPATH=str(REPO))
    with launching(nb, env) as launch:
        info = launch.ready(timeout=120)
        headers = {"Authorization": f"token {info['token']}"}
        assert requests.get(f"{info['url']}/api", headers=headers, timeout=10).status_code == 200
        with_cell(nb, BIG_INT)
        noted = wait_until(lambda: "5,000 digits" in launch.stderr, timeout=15)
        assert noted, launch.stderr
        notes = [ln for ln in launch.stderr.splitlines() if "5,000 digits" in ln]
        assert len(notes) == 1, launch.stderr
        assert "cannot be read now" in notes[0] and str(nb) in notes[0]
        assert "ERROR" not in launch.stderr, launch.stderr
        time.sleep(1.5)  # the watcher looks once a second: it must still be there after a look
        assert launch.proc.poll() is None, launch.stderr
        assert alive(info["pid"])
        assert requests.get(f"{info['url']}/api", headers=headers, timeout=10).status_code == 200
        launch.proc.send_signal(signal.SIGINT)
        assert launch.proc.wait(timeout=30) == 0, launch.stderr
        assert wait_until(lambda: not alive(info["pid"]), 10.0), "the gateway outlived envsync"


# --- 10. the write lock ----------------------------------------------------------------------


def old_shared_lock_path(nb: Path) -> Path:
    key = hashlib.sha256(str(nb.resolve()).encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"envsync-notebook-{key}.lock"


def test_a_link_and_a_held_lock_planted_in_the_shared_temp_folder_change_nothing(
    tmp_path: Path, nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"another user's file\n")
    planted = old_shared_lock_path(nb)
    planted.unlink(missing_ok=True)
    planted.symlink_to(victim)
    fd = os.open(victim, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another user holding it would
        start = time.monotonic()
        code, _, err = run(capsys, "add", nb, "beta")
        seconds = time.monotonic() - start
    finally:
        os.close(fd)
        planted.unlink(missing_ok=True)
    assert code == 0, err
    assert "beta" in manifest_of(nb)["dependencies"]
    assert victim.read_bytes() == b"another user's file\n"
    assert seconds < 20, f"add took {seconds:.1f} s"


HOLDER = """
import sys, time
from pathlib import Path
from envsync.notebook import jsontext, writelock
with writelock.held(Path(sys.argv[1]), sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_lock_another_process_holds_is_one_error_naming_it_within_the_wait(
    nb: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert 1.0 <= writelock.WAIT_SECONDS <= 10.0
    monkeypatch.setattr(writelock, "WAIT_SECONDS", 0.5)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(nb.resolve())],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        before = nb.read_bytes()
        start = time.monotonic()
        code, out, err = run(capsys, "add", nb, "beta")
        seconds = time.monotonic() - start
    finally:
        end_by_pid(holder.pid)
        holder.wait(timeout=10)
    line = one_error(code, err, f"another envsync (pid {holder.pid}: python")
    assert line.endswith(f"is writing {nb}; try again when it finishes"), line
    assert nb.read_bytes() == before
    assert seconds < 10, f"add took {seconds:.1f} s to give up"


@pytest.mark.parametrize("problem", ["world-writable", "another-owner", "a-link"])
def test_a_lock_folder_others_can_write_is_refused(
    problem: str, nb: Path, tmp_path: Path, private_lock_folders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = private_lock_folders / "envsync" / "locks"
    folder.parent.mkdir(parents=True)
    if problem == "a-link":
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
        text = "is a symbolic link"
    else:
        folder.mkdir()
        if problem == "world-writable":
            folder.chmod(0o777)
            text = "can be written by other users (mode 0777)"
        else:
            if os.geteuid() != 0:
                pytest.skip("giving a folder to another user needs root")
            os.chown(folder, 12345, 12345)
            text = "belongs to another user (uid 12345)"
    before = nb.read_bytes()
    code, _, err = run(capsys, "add", nb, "beta")
    line = one_error(code, err, f"refusing to keep notebook locks in {folder}: it {text}")
    assert line
    assert nb.read_bytes() == before


def test_the_lock_lives_in_a_private_runtime_folder_when_there_is_one(
    nb: Path, tmp_path: Path, private_lock_folders: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared-run"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    assert writelock.lock_dir() == private_lock_folders / "envsync" / "locks"
    private = tmp_path / "run"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(private))
    code, _, err = run(capsys, "add", nb, "beta")
    assert code == 0, err
    locks = private / "envsync" / "locks"
    assert [p.name for p in locks.iterdir()] == [writelock.lock_path(nb.resolve()).name]
    assert stat.S_IMODE(locks.stat().st_mode) == 0o700
    assert not (shared / "envsync").exists()


# --- 11. owner, group and mode ---------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize("command", ["add", "lock"])
def test_rewrite_as_root_keeps_owner_group_and_mode(
    command: str, nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if command == "lock":
        edit_manifest(nb, lambda m: m["dependencies"].append("beta"))
    os.chown(nb, 12345, 12345)
    nb.chmod(0o640)
    before = nb.read_bytes()
    with umask(0o077):
        code, _, err = run(capsys, *(["add", nb, "beta"] if command == "add" else ["lock", nb]))
    assert code == 0, err
    assert nb.read_bytes() != before
    st = nb.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (12345, 12345, 0o640)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to take away the right to give files away",
)
def test_rewrite_that_cannot_keep_the_owner_is_refused_and_changes_nothing(
    nb: Path, tmp_path: Path, local_index: LocalIndex, private_lock_folders: Path
) -> None:
    os.chown(nb, 12345, 12345)
    nb.chmod(0o666)
    before = nb.read_bytes()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENVSYNC_")},
        "ENVSYNC_HOME": str(tmp_path / "home"),
        "ENVSYNC_ALLOWED_INDEXES": local_index.url,
        "XDG_CACHE_HOME": str(private_lock_folders),
        "PYTHONPATH": str(REPO),
    }
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    res = subprocess.run(
        [setpriv, "--bounding-set", "-chown", "--", sys.executable, "-m", "envsync", "add", str(nb), "beta"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = one_error(res.returncode, res.stderr, f"cannot rewrite {nb} with its owner (uid 12345, gid 12345)")
    assert "nothing was written" in line
    assert nb.read_bytes() == before
    st = nb.stat()
    assert (st.st_uid, st.st_gid) == (12345, 12345)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize(
    ("owner", "text"),
    [
        ((4242, 12345), "belongs to another user (uid 4242); rewriting it would make it yours"),
        ((12345, 4242), "belongs to group 4242, which you are not in; rewriting it would change its group"),
    ],
    ids=["another-user", "a-group-not-ours"],
)
def test_a_user_who_cannot_keep_the_owner_is_refused_before_anything_is_written(
    owner: tuple[int, int],
    text: str,
    nb: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As user 12345 (group 12345 only): a notebook of another user or group is left as it is."""
    nb.chmod(0o666)
    os.chown(nb, *owner)
    before = nb.read_bytes()
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    monkeypatch.setattr(os, "getegid", lambda: 12345)
    monkeypatch.setattr(os, "getgroups", lambda: [12345])
    code, out, err = run(capsys, "add", nb, "beta")
    one_error(code, err, f"{nb} {text}")
    assert out == ""
    assert nb.read_bytes() == before
    st = nb.stat()
    assert (st.st_uid, st.st_gid) == owner
