"""sync(): build once from a lock, reuse without the installer, refuse what is not safe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from envsync.env import history, interpreters, inventory, store
from envsync.env import sync as sync_mod
from envsync.errors import IndexNotAllowedError, InstallError, InterpreterNotFoundError, ManifestError
from envsync.lock.model import Lock
from envsync.ops.sync import ProgressEvent, SyncResult, sync
from envsync.settings import Settings
from tests.envhelpers import BASE, imported_versions, make_lock, settings_at, tree_snapshot
from tests.support.processes import wait_for_bytecode_compiles
from tests.wheelhouse import LocalIndex, build_wheel, sha256_file


@pytest.fixture(scope="module")
def built(
    local_index: LocalIndex, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Lock, SyncResult, list[ProgressEvent]]]:
    """One env built from the base lock, shared by the tests that only look at it."""
    settings = settings_at(tmp_path_factory.mktemp("sync-home"), local_index.url)
    lock = make_lock(local_index)
    events: list[ProgressEvent] = []
    result = sync(
        lock=lock, project="demo", notebook=Path("demo.ipynb"), settings=settings, progress=events.append
    )
    yield settings, lock, result, events


def test_built_env_imports_the_locked_packages_at_the_locked_versions(built) -> None:
    _settings, _lock, result, _events = built
    assert not result.reused and result.installer_ran
    assert result.drift.clean
    assert imported_versions(result.python, ["alpha", "beta", "comm", "ipykernel"]) == {
        "alpha": "1.1.0",
        "beta": "1.0.0",
        "comm": "0.2.0",
        "ipykernel": "6.0.0",
    }
    assert result.python_version.startswith("3.")
    assert result.packages == 4 and result.backend == "uv"


def test_ready_marker_records_fingerprint_interpreter_and_installed_set(built) -> None:
    _settings, lock, result, _events = built
    marker = json.loads((result.env / store.READY).read_text())
    assert marker["fingerprint"] == lock.fingerprint
    assert marker["installed"] == BASE
    assert marker["marker_env"]["python_full_version"] == result.python_version
    assert result.env.name.startswith(lock.fingerprint.split(":")[1][:16] + "-cp3")


def test_second_sync_reuses_env_without_installer_or_interpreter_search(built, monkeypatch) -> None:
    settings, lock, first, _events = built
    # The build's background bytecode compile writes __pycache__ after the ready marker;
    # what is held against the reuse is the tree once that is done.
    wait_for_bytecode_compiles(first.env)
    before = tree_snapshot(first.env)
    marker = (first.env / store.READY).read_bytes()

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("reuse must not run an installer or look for an interpreter")

    monkeypatch.setattr(sync_mod.installers, "choose", forbidden)
    monkeypatch.setattr(interpreters, "find", forbidden)
    again = sync(lock=lock, project="demo", notebook=Path("demo.ipynb"), settings=settings)

    assert again.reused and not again.installer_ran
    assert again.env == first.env and again.drift.clean
    assert (first.env / store.READY).read_bytes() == marker
    after = tree_snapshot(first.env)
    before.pop(store.USED), after.pop(store.USED)  # the last-use stamp is meant to move
    assert after == before


def test_reuse_records_the_time_of_use(built) -> None:
    settings, lock, first, _events = built
    store.mark_used(first.env, now=1000.0)
    sync(lock=lock, project="demo", notebook=Path("demo.ipynb"), settings=settings)
    assert (store.last_used(first.env) or 0) > 1000.0


def test_two_notebooks_with_the_same_lock_share_one_env(built) -> None:
    settings, lock, first, _events = built
    other = sync(lock=lock, project="other-notebook", notebook=Path("b.ipynb"), settings=settings)
    assert other.env == first.env and not other.installer_ran
    assert other.kernel_name == "envsync-other-notebook"
    assert len([e for e in inventory.list_envs(settings) if e.state == "ready"]) == 1


def test_progress_reports_each_phase_of_a_build(built) -> None:
    _settings, _lock, _result, events = built
    phases = [e.phase for e in events]
    for phase in ("interpreter", "venv", "install", "verify", "kernel"):
        assert phase in phases
    assert any(e.message == "installing 4 packages with uv" for e in events)
    installed = [e for e in events if e.phase == "install" and e.done]
    assert installed[-1].done == installed[-1].total == 4


def test_sync_remembers_the_lock_this_machine_last_ran(built) -> None:
    settings, lock, _result, _events = built
    assert history.last_run(settings, "demo") == lock
    assert history.last_run(settings, "never-ran") is None


def test_last_run_survives_a_damaged_record(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index)
    path = history.record_run(settings, project="p", lock=lock)
    assert history.last_run(settings, "p") == lock
    path.write_text("{not json")
    assert history.last_run(settings, "p") is None


def test_tampered_hash_fails_naming_the_package_and_leaves_no_env(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index, hashes={"alpha": "ab" * 32})
    with pytest.raises(InstallError) as err:
        sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert err.value.message.startswith("hash mismatch for alpha==1.1.0")
    assert "\n" not in err.value.message
    assert inventory.list_envs(settings) == []
    assert not (settings.kernels_dir / "envsync-demo").exists()
    assert history.last_run(settings, "demo") is None


def test_reuploaded_file_on_the_index_fails_with_hash_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A private uv cache: the altered wheel must not linger in the shared one.
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    index = LocalIndex(tmp_path / "index")
    for name, version in BASE.items():
        index.add(name, version)
    index.start()
    try:
        settings = settings_at(tmp_path / "home", index.url)
        lock = make_lock(index)
        alpha = next(w for w in index.files["alpha"])
        other = build_wheel(tmp_path / "evil", "alpha", "1.1.0", files={"alpha/__init__.py": "evil = 1\n"})
        assert sha256_file(other) != sha256_file(alpha)
        index.replace(alpha, other.read_bytes())
        with pytest.raises(InstallError, match=r"^hash mismatch for alpha==1\.1\.0"):
            sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
        assert inventory.list_envs(settings) == []
    finally:
        index.stop()


def test_a_build_whose_wheels_uv_holds_does_not_need_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A private uv cache, so that what it holds is only what the first build put there.
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    # Pages as PyPI's are once ten minutes old: to be asked for again before each use.
    index = LocalIndex(tmp_path / "index", max_age=0)
    for name, version in BASE.items():
        index.add(name, version)
    index.start()
    shown: dict[str, list[ProgressEvent]] = {"a": [], "b": []}

    def build(home: str) -> SyncResult:
        return sync(
            lock=lock,
            project="demo",
            notebook=Path("n.ipynb"),
            settings=settings_at(tmp_path / home, index.url),
            progress=shown[home].append,
        )

    try:
        lock = make_lock(index)
        first = build("a")
        assert any(path.endswith(".whl") for path in index.served)
        index.served.clear()
        again = build("b")  # another envsync home, the same lock: from uv's cache alone
    finally:
        index.stop()
    assert index.served == []
    assert not again.reused and again.installer_ran and again.drift.clean
    assert again.env != first.env
    assert imported_versions(again.python, sorted(BASE)) == BASE
    # Each build shows what uv installed, and neither shows the cache-only attempt that
    # could not install (the first build's cache was empty).
    for events in shown.values():
        assert len([e for e in events if e.phase == "install" and e.message.startswith("+ ")]) == len(BASE)
        assert not [e.message for e in events if "cache" in e.message.lower() or "error" in e.message.lower()]
    wait_for_bytecode_compiles(first.env)
    wait_for_bytecode_compiles(again.env)


def test_index_the_machine_has_not_allowed_is_refused(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path)  # local index not allowed here
    with pytest.raises(IndexNotAllowedError, match="has not allowed"):
        sync(lock=make_lock(local_index), project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert not settings.envs_dir.exists()


@pytest.mark.parametrize("slug", ["../escape", "Demo", "", "a" * 65, "a/b", "demo\n", "--", "x y"])
def test_project_slug_that_is_not_safe_as_a_path_is_refused(
    slug: str, tmp_path: Path, local_index: LocalIndex
) -> None:
    settings = settings_at(tmp_path, local_index.url)
    with pytest.raises(ManifestError, match="not a valid slug"):
        sync(lock=make_lock(local_index), project=slug, notebook=Path("n.ipynb"), settings=settings)
    assert not settings.envs_dir.exists()


def test_missing_interpreter_error_says_which_python_is_needed(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    try:
        interpreters.find(">=3.14")
        pytest.skip("this machine has Python 3.14")
    except InterpreterNotFoundError:
        pass
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index, requires_python=">=3.14")
    with pytest.raises(InterpreterNotFoundError) as err:
        sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert "requires-python '>=3.14'" in err.value.message
    assert "CPython 3.14" in err.value.message
    assert "uv python install 3.14" in (err.value.hint or "")


def test_markers_are_evaluated_for_the_env_interpreter(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    versions = {**BASE, "winonly": "1.0.0"}
    lock = make_lock(local_index, versions, markers={"winonly": 'sys_platform == "win32"'})
    result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert result.drift.clean and result.packages == 4
    assert "winonly" not in json.loads((result.env / store.READY).read_text())["installed"]


def test_interrupted_build_leaves_no_env(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)

    def ctrl_c(event: ProgressEvent) -> None:
        if event.phase == "install" and event.done is None and event.total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(
            lock=make_lock(local_index),
            project="demo",
            notebook=Path("n.ipynb"),
            settings=settings,
            progress=ctrl_c,
        )
    assert inventory.list_envs(settings) == []
    again = sync(lock=make_lock(local_index), project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert again.installer_ran and again.drift.clean


def test_sync_with_hold_keeps_gc_away_until_released(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    result = sync(
        lock=make_lock(local_index), project="demo", notebook=Path("n.ipynb"), settings=settings, hold=True
    )
    assert result.hold is not None
    try:
        gone = inventory.gc(settings, older_than_days=0, now=10**10)
        assert [e.reason for e in gone.entries] == ["in use"] and result.env.exists()
    finally:
        result.hold.release()
    assert [e.key for e in inventory.gc(settings, older_than_days=0, now=10**10).removed] == [result.key]
    assert not result.env.exists()


def test_index_gone_fails_cleanly_and_leaves_no_env(tmp_path: Path, local_index: LocalIndex) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/simple"
    settings = settings_at(tmp_path, dead)
    with pytest.raises(InstallError, match=r"^installing 4 packages with uv failed") as err:
        sync(
            lock=make_lock(local_index, url=dead), project="demo", notebook=Path("n.ipynb"), settings=settings
        )
    assert "\n" not in err.value.message
    assert inventory.list_envs(settings) == []


def test_disk_full_when_writing_the_ready_marker_leaves_no_env(
    tmp_path: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    settings = settings_at(tmp_path, local_index.url)

    def full(_record: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_ready", full)
    with pytest.raises(InstallError, match="^cannot build the environment in .*: No space left on device$"):
        sync(lock=make_lock(local_index), project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert inventory.list_envs(settings) == []
    monkeypatch.undo()
    assert sync(
        lock=make_lock(local_index), project="demo", notebook=Path("n.ipynb"), settings=settings
    ).drift.clean


def test_lock_whose_fingerprint_does_not_match_its_packages_is_refused(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    import dataclasses

    from envsync.errors import LockError

    settings = settings_at(tmp_path, local_index.url)
    good = make_lock(local_index)
    other = make_lock(local_index, {**BASE, "alpha": "2.0.0"})
    forged = dataclasses.replace(other, fingerprint=good.fingerprint)  # would reuse good's env
    with pytest.raises(LockError, match="fingerprint does not match"):
        sync(lock=forged, project="demo", notebook=Path("n.ipynb"), settings=settings)
