"""A new env gets its modules compiled to bytecode after the build, without the build waiting; a reuse compiles nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from envsync.env import store
from envsync.ops import sync as ops_sync
from envsync.ops.sync import sync
from tests.envhelpers import make_lock, settings_at
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex


def compiled_packages(env: Path) -> set[str]:
    return {p.parent.parent.name for p in env.glob("lib/python*/site-packages/*/__pycache__/*.pyc")}


def test_a_new_env_is_compiled_in_the_background_and_a_reuse_starts_nothing(
    local_index: LocalIndex, tmp_path: Path
) -> None:
    settings = settings_at(tmp_path / "home", local_index.url)
    lock = make_lock(local_index)
    ops_sync._compiling.clear()
    built = sync(lock=lock, project="demo", notebook=Path("demo.ipynb"), settings=settings)
    assert len(ops_sync._compiling) == 1
    compile_run = ops_sync._compiling[0]
    assert wait_until(lambda: compile_run.poll() is not None, timeout=120)
    assert compile_run.returncode == 0
    assert compiled_packages(built.env) >= {"alpha", "beta", "comm", "ipykernel"}

    again = sync(lock=lock, project="demo", notebook=Path("demo.ipynb"), settings=settings)
    assert again.reused and not again.installer_ran
    assert ops_sync._compiling in ([], [compile_run])  # nothing new was started


def test_a_kernel_start_holds_the_background_compile_back_until_its_pause_ends(
    local_index: LocalIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_at(tmp_path / "home", local_index.url)
    lock = make_lock(local_index)
    built = sync(lock=lock, project="demo", notebook=Path("demo.ipynb"), settings=settings)
    assert wait_until(lambda: all(p.poll() is not None for p in ops_sync._compiling), timeout=120)
    for cache in built.env.glob("lib/python*/site-packages/alpha/__pycache__"):
        shutil.rmtree(cache)
    monkeypatch.setattr(ops_sync, "KERNEL_START_PAUSE", 3.0)
    rec = store.read_ready(built.env)
    assert rec is not None and ops_sync.kernel_start_check(rec, lock).clean
    until = (built.env / ops_sync.COMPILE_PAUSE).stat().st_mtime
    ops_sync.compile_in_background(built.env)
    assert wait_until(lambda: ops_sync._compiling[-1].poll() is not None, timeout=120)
    written = [p.stat().st_mtime for p in built.env.glob("lib/python*/site-packages/alpha/__pycache__/*.pyc")]
    assert written and min(written) >= until  # compiled, and not before the pause ended
