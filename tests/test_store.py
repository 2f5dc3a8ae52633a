"""The env store: keys, ready markers, holds, listing and garbage collection."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from envsync import proc
from envsync.env import inventory, store
from envsync.errors import InstallError
from envsync.settings import Settings
from tests.envhelpers import PYTHON, settings_at
from tests.support.processes import child_env

FP = "sha256:" + "ab12" * 16


def _env(
    settings: Settings, name: str, *, ready: bool = True, used: float | None = None, fp: str = FP
) -> Path:
    """A directory that looks like a built env (its python is envsync's own interpreter)."""
    path = settings.envs_dir / name
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    if ready:
        store.write_ready(
            store.EnvRecord(
                path=path,
                key=store.key_of(path),
                fingerprint=fp,
                python_version="3.11.7",
                tag="cp311",
                base_python=sys.executable,
                marker_env={},
                backend="uv",
                installed={"alpha": "1.0"},
                created=used or time.time(),
            )
        )
        store.mark_used(path, now=used)
    return path


def test_env_key_is_fingerprint_prefix_and_interpreter_tag() -> None:
    assert store.env_key(FP, "cp311") == "ab12ab12ab12ab12-cp311"
    assert store.env_key(FP, "cp313t") == "ab12ab12ab12ab12-cp313t"
    for fp, tag in ((FP, "../x"), ("sha256:../../etc", "cp311"), ("", "cp311")):
        with pytest.raises(InstallError):
            store.env_key(fp, tag)


def test_a_directory_without_ready_marker_is_not_an_env(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    half = _env(settings, "ab12ab12ab12ab12-cp311-000001", ready=False)
    assert store.read_ready(half) is None
    assert store.ready_envs(settings, FP) == []
    assert [e.state for e in inventory.list_envs(settings)] == ["incomplete"]


def test_marker_for_another_lock_or_damaged_marker_is_not_ready(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    env = _env(settings, "ab12ab12ab12ab12-cp311-000001")
    assert store.read_ready(env, fingerprint=FP) is not None
    assert store.read_ready(env, fingerprint="sha256:" + "ab12" * 15 + "ffff") is None
    (env / store.READY).write_text("{")
    assert store.read_ready(env) is None


def test_env_whose_interpreter_is_gone_is_broken_not_ready(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    env = _env(settings, "ab12ab12ab12ab12-cp311-000001")
    os.unlink(env / "bin" / "python")
    assert store.ready_envs(settings, FP) == []
    assert [e.state for e in inventory.list_envs(settings)] == ["broken"]


def test_list_envs_reports_a_build_in_progress(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    _env(settings, "ab12ab12ab12ab12-cp311-000001", ready=False)
    with store.locked(settings, "ab12ab12ab12ab12-cp311"):
        assert [e.state for e in inventory.list_envs(settings)] == ["building"]


def test_ready_envs_prefers_the_most_recently_used(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    _env(settings, "ab12ab12ab12ab12-cp311-000001", used=1000)
    _env(settings, "ab12ab12ab12ab12-cp312-000002", used=2000)
    assert [r.key for r in store.ready_envs(settings, FP)] == [
        "ab12ab12ab12ab12-cp312",
        "ab12ab12ab12ab12-cp311",
    ]


def test_gc_removes_envs_unused_for_n_days_and_keeps_recent_ones(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    now = time.time()
    old = _env(settings, "ab12ab12ab12ab12-cp311-000001", used=now - 40 * 86400)
    recent = _env(settings, "cd34cd34cd34cd34-cp311-000002", used=now - 2 * 86400, fp="sha256:" + "cd34" * 16)
    preview = inventory.gc(settings, older_than_days=30, dry_run=True, now=now)
    assert [e.key for e in preview.removed] == ["ab12ab12ab12ab12-cp311"] and old.exists()
    result = inventory.gc(settings, older_than_days=30, now=now)
    assert [(e.key, e.reason) for e in result.removed] == [("ab12ab12ab12ab12-cp311", "unused for 30 days")]
    assert [(e.key, e.reason) for e in result.kept] == [("cd34cd34cd34cd34-cp311", "recently used")]
    assert not old.exists() and recent.exists()
    assert list((settings.envs_dir / ".trash").iterdir()) == []


def test_gc_never_removes_an_env_in_use(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    env = _env(settings, "ab12ab12ab12ab12-cp311-000001", used=1.0)
    with store.hold(settings, env):
        result = inventory.gc(settings, older_than_days=1)
        assert [(e.removed, e.reason) for e in result.entries] == [(False, "in use")]
    assert env.exists()
    assert [e.removed for e in inventory.gc(settings, older_than_days=1).entries] == [True]


def test_gc_never_removes_a_half_built_env_of_a_live_build(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    half = _env(settings, "ab12ab12ab12ab12-cp311-000001", ready=False)
    with store.locked(settings, "ab12ab12ab12ab12-cp311"):
        assert [(e.removed, e.reason) for e in inventory.gc(settings, older_than_days=0).entries] == [
            (False, "busy")
        ]
        assert half.exists()
    # The build died (its lock is free): the leftover goes, whatever its age.
    assert [(e.removed, e.reason) for e in inventory.gc(settings, older_than_days=365).entries] == [
        (True, "incomplete build")
    ]
    assert not half.exists()


def test_a_hold_of_a_process_killed_with_sigkill_does_not_count(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    env = _env(settings, "ab12ab12ab12ab12-cp311-000001")
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom envsync.env import store\nfrom envsync.settings import Settings\n"
        "h = store.hold(Settings(home=Path(sys.argv[1])), Path(sys.argv[2]))\nprint('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = proc.spawn(
        [PYTHON, "-c", code, str(settings.home), str(env)], env=child_env(), stderr=proc.DEVNULL
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"held"
        assert store.in_use(settings, env)
        child.kill()
        child.wait(timeout=10)
        assert not store.in_use(settings, env)
        assert list((settings.envs_dir / ".holds" / env.name).glob("*.hold")) == []
    finally:
        proc.shutdown(child, interrupt_timeout=0)


def test_hold_refuses_an_env_that_is_gone(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    env = _env(settings, "ab12ab12ab12ab12-cp311-000001", ready=False)
    with pytest.raises(InstallError, match="gone or incomplete"):
        store.hold(settings, env)


def test_mark_used_changes_no_file_but_its_stamp(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    env = _env(settings, "ab12ab12ab12ab12-cp311-000001", used=1000)
    dir_mtime = env.stat().st_mtime_ns
    marker = (env / store.READY).stat().st_mtime_ns
    store.mark_used(env, now=5000)
    assert store.last_used(env) == 5000
    assert env.stat().st_mtime_ns == dir_mtime and (env / store.READY).stat().st_mtime_ns == marker
