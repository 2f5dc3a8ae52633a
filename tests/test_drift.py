"""Drift: what an env really holds (read from dist-info) against its lock, and repair."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from envsync import proc
from envsync.env import drift, store
from envsync.env.drift import check_lock
from envsync.env.store import EnvRecord
from envsync.errors import DriftError
from envsync.ops.sync import sync
from tests.envhelpers import imported_versions, make_lock, settings_at
from tests.wheelhouse import LocalIndex


def _dist(site: Path, name: str, version: str, *, metadata: bool = True) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    if metadata:
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: not-a-header\n"
        )


def _fake_env(tmp_path: Path, dists: dict[str, str]) -> Path:
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for name, version in dists.items():
        _dist(site, name, version)
    return tmp_path / "env"


def test_installed_reads_names_and_versions_from_dist_info(tmp_path: Path) -> None:
    env = _fake_env(tmp_path, {"Alpha_Pkg": "1.0", "beta": "2.0.0"})
    _dist(env / "lib" / "python3.11" / "site-packages", "nometa", "0.3", metadata=False)
    (env / "lib" / "python3.11" / "site-packages" / "alpha_pkg").mkdir()
    assert drift.installed(env) == {"alpha-pkg": "1.0", "beta": "2.0.0", "nometa": "0.3"}


def test_compare_names_missing_extra_and_changed_and_leaves_seed_out() -> None:
    want = {"alpha": "1.1.0", "beta": "1.0.0", "comm": "0.2.0"}
    have = {"alpha": "2.0.0", "comm": "0.2", "winonly": "1.0.0", "pip": "24.0"}
    diffs, ignored = drift.compare(want, have, seed={"pip": "24.0"})
    assert [(d.name, d.kind, d.locked, d.installed) for d in diffs] == [
        ("alpha", "changed", "1.1.0", "2.0.0"),
        ("beta", "missing", "1.0.0", None),
        ("winonly", "extra", None, "1.0.0"),
    ]
    assert ignored == ("pip",)  # 0.2 == 0.2.0 under PEP 440: comm is not changed


def test_seed_package_the_lock_names_is_compared_like_any_other() -> None:
    diffs, ignored = drift.compare({"pip": "25.0"}, {"pip": "24.0"}, seed={"pip": "24.0"})
    assert [d.kind for d in diffs] == ["changed"] and ignored == ()


def test_check_evaluates_the_lock_for_the_env_own_markers(tmp_path: Path, local_index: LocalIndex) -> None:
    lock = make_lock(
        local_index, {"alpha": "1.1.0", "winonly": "1.0.0"}, markers={"winonly": 'sys_platform == "win32"'}
    )
    env = _fake_env(tmp_path, {"alpha": "1.1.0"})
    linux = {"sys_platform": "linux", "python_full_version": "3.11.7", "python_version": "3.11"}
    windows = {**linux, "sys_platform": "win32"}
    rec = EnvRecord(
        path=env,
        key="k",
        fingerprint=lock.fingerprint,
        python_version="3.11.7",
        tag="cp311",
        base_python="",
        marker_env=linux,
        backend="uv",
        installed={},
    )
    assert drift.check(rec, lock).clean
    on_windows = drift.check(EnvRecord(**{**rec.__dict__, "marker_env": windows}), lock)
    assert [(d.name, d.kind) for d in on_windows.differences] == [("winonly", "missing")]


def test_a_built_env_keeps_what_its_lock_installs_and_a_reuse_upgrades_an_older_record(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index, {"alpha": "1.1.0", "winonly": "1.0.0"}, markers={"winonly": 'sys_platform == "win32"'})
    result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    rec = store.read_ready(result.env)
    assert rec is not None and rec.locked == {"alpha": "1.1.0"} and rec.requires_python == lock.requires_python
    # A record kept before `locked` existed is checked by the lock's markers, then upgraded.
    old = dataclasses.replace(rec, locked=None, requires_python=None)
    store.write_ready(old)
    assert drift.check(old, lock).clean
    again = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert again.reused and store.read_ready(result.env).locked == {"alpha": "1.1.0"}
    # The kept choice answers for this very lock only: another lock's markers are evaluated.
    other = make_lock(local_index, {"alpha": "1.1.0", "winonly": "1.0.0"})
    assert [(d.name, d.kind) for d in drift.check(rec, other).differences] == [("winonly", "missing")]


@pytest.fixture
def built_env(tmp_path: Path, local_index: LocalIndex):
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index)
    result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    return settings, lock, result


def test_hand_installed_package_is_extra_and_repair_removes_it(built_env, local_index: LocalIndex) -> None:
    settings, lock, result = built_env
    uv = __import__("uv").find_uv_bin()
    proc.run(
        [
            uv,
            "pip",
            "install",
            "--no-config",
            "--python",
            result.python,
            "--index-url",
            local_index.url,
            "winonly==1.0.0",
        ]
    )

    report = check_lock(lock=lock, settings=settings)
    assert [(d.name, d.kind, d.installed) for d in report.differences] == [("winonly", "extra", "1.0.0")]
    assert not report.clean

    # Without repair a sync still reuses the env, and says what drifted.
    plain = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert not plain.installer_ran and [d.name for d in plain.drift.extra] == ["winonly"]

    fixed = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, repair=True)
    assert fixed.repaired == ("winonly",) and fixed.installer_ran and fixed.reused
    assert fixed.env == result.env and fixed.drift.clean
    assert check_lock(lock=lock, settings=settings).clean
    assert store.read_ready(result.env) is not None


def test_changed_and_missing_packages_are_reported_and_repaired(built_env, local_index: LocalIndex) -> None:
    settings, lock, result = built_env
    uv = __import__("uv").find_uv_bin()
    proc.run(
        [
            uv,
            "pip",
            "install",
            "--no-config",
            "--python",
            result.python,
            "--index-url",
            local_index.url,
            "alpha==2.0.0",
        ]
    )
    proc.run([uv, "pip", "uninstall", "--no-config", "--python", result.python, "comm"])

    report = check_lock(lock=lock, settings=settings)
    assert [(d.name, d.kind, d.locked, d.installed) for d in report.differences] == [
        ("alpha", "changed", "1.1.0", "2.0.0"),
        ("comm", "missing", "0.2.0", None),
    ]
    fixed = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, repair=True)
    assert fixed.repaired == ("alpha", "comm") and fixed.drift.clean
    assert imported_versions(fixed.python, ["alpha", "comm"]) == {"alpha": "1.1.0", "comm": "0.2.0"}


def test_pip_seeded_by_virtualenv_is_not_reported_as_extra(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index)
    result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, backend="pip")
    report = check_lock(lock=lock, settings=settings)
    assert report.clean and "pip" in report.ignored
    assert "pip" in drift.installed(result.env)


def test_check_without_an_env_for_the_lock_is_drift(tmp_path: Path, local_index: LocalIndex) -> None:
    with pytest.raises(DriftError, match="no environment for this lock") as err:
        check_lock(lock=make_lock(local_index), settings=settings_at(tmp_path, local_index.url))
    assert err.value.exit_code == 3
