"""Kernelspecs: contents, where they go, naming under two locks, and what is never touched."""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from envsync import rules
from envsync.env import store
from envsync.errors import KernelError, ManifestError
from envsync.jupyter import kernelspecs as kernels
from envsync.ops.sync import sync
from envsync.settings import Settings
from tests.envhelpers import BASE, make_lock, settings_at
from tests.wheelhouse import LocalIndex


@pytest.fixture(autouse=True)
def user_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's Jupyter data dir, private to each test."""
    path = tmp_path / "user-jupyter"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(path))
    return path / "kernels"


def _python3(folder: Path) -> Path:
    """A kernelspec like the one ipykernel installs, which envsync must never touch."""
    spec = folder / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        )
    )
    return spec


def _fake_env(settings: Settings, name: str) -> Path:
    env = settings.envs_dir / name
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    return env / "bin" / "python"


def _write(settings: Settings, *, python: Path, **kw: Any) -> str:
    """kernels.write as a sync calls it: the env's key, and holds as the store sees them."""
    return kernels.write(
        settings,
        python=python,
        env_key=store.key_of(python.parent.parent),
        held=partial(store.in_use, settings),
        **kw,
    )


def test_kernelspec_runs_env_python_with_ipykernel_and_names_project(
    tmp_path: Path, local_index: LocalIndex, user_jupyter: Path
) -> None:
    settings = settings_at(tmp_path / "home", local_index.url)
    lock = make_lock(local_index)
    result = sync(lock=lock, project="sales-forecast", notebook=tmp_path / "sales.ipynb", settings=settings)
    assert result.kernel_name == "envsync-sales-forecast"
    spec = json.loads((settings.kernels_dir / "envsync-sales-forecast" / "kernel.json").read_text())
    assert spec["argv"] == [str(result.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    # The manifest's requires-python as declared, never this machine's minor.
    assert spec["display_name"] == "sales-forecast (Python >=3.11, envsync)"
    assert spec["language"] == "python" and spec["interrupt_mode"] == "signal"
    assert spec["metadata"]["envsync"] == {
        "fingerprint": lock.fingerprint,
        "project": "sales-forecast",
        "notebook": str(tmp_path / "sales.ipynb"),
    }
    assert not user_jupyter.exists()  # only with register_user


def test_register_user_also_writes_into_the_user_jupyter_dir(
    tmp_path: Path, local_index: LocalIndex, user_jupyter: Path
) -> None:
    settings = settings_at(tmp_path / "home", local_index.url)
    sync(
        lock=make_lock(local_index),
        project="demo",
        notebook=tmp_path / "n.ipynb",
        settings=settings,
        register_user=True,
    )
    ours = (settings.kernels_dir / "envsync-demo" / "kernel.json").read_text()
    assert (user_jupyter / "envsync-demo" / "kernel.json").read_text() == ours
    assert {(k.name, k.location) for k in kernels.list_kernels(settings)} == {
        ("envsync-demo", "envsync"),
        ("envsync-demo", "user"),
    }


def test_prune_and_remove_never_touch_python3_or_foreign_kernels(tmp_path: Path, user_jupyter: Path) -> None:
    settings = settings_at(tmp_path / "home")
    mine = _python3(settings.kernels_dir)
    users = _python3(user_jupyter)
    before = (mine / "kernel.json").read_text()
    gone_python = _fake_env(settings, "0123456789abcdef-cp311-aaaaaa")
    _write(
        settings,
        project="old",
        notebook="n",
        fingerprint="sha256:x",
        python=gone_python,
        requires_python="==3.11.*",
        register_user=True,
    )
    os.unlink(gone_python)  # its env was deleted

    pruned = kernels.prune(settings)
    assert sorted((k.name, k.location) for k in pruned) == [
        ("envsync-old", "envsync"),
        ("envsync-old", "user"),
    ]
    with pytest.raises(KernelError, match="not created by envsync"):
        kernels.remove(settings, "python3")
    assert (mine / "kernel.json").read_text() == before and (users / "kernel.json").exists()
    assert [k.name for k in kernels.list_kernels(settings)] == ["python3", "python3"]
    assert not any(k.ours for k in kernels.list_kernels(settings))


def test_prune_keeps_kernels_whose_env_exists_and_dry_run_removes_nothing(tmp_path: Path) -> None:
    settings = settings_at(tmp_path / "home")
    alive = _fake_env(settings, "0123456789abcdef-cp311-aaaaaa")
    dead = _fake_env(settings, "fedcba9876543210-cp311-bbbbbb")
    _write(
        settings, project="a", notebook="n", fingerprint="sha256:a", python=alive, requires_python="==3.11.*"
    )
    _write(
        settings, project="b", notebook="n", fingerprint="sha256:b", python=dead, requires_python="==3.11.*"
    )
    os.unlink(dead)
    assert [k.name for k in kernels.prune(settings, dry_run=True)] == ["envsync-b"]
    assert (settings.kernels_dir / "envsync-b").exists()
    assert [k.name for k in kernels.prune(settings)] == ["envsync-b"]
    assert [k.name for k in kernels.list_kernels(settings)] == ["envsync-a"]


def test_remove_deletes_an_envsync_kernel_from_both_places(tmp_path: Path, user_jupyter: Path) -> None:
    settings = settings_at(tmp_path / "home")
    python = _fake_env(settings, "0123456789abcdef-cp311-aaaaaa")
    _write(
        settings,
        project="a",
        notebook="n",
        fingerprint="sha256:a",
        python=python,
        requires_python="==3.11.*",
        register_user=True,
    )
    removed = kernels.remove(settings, "envsync-a")
    assert removed == [settings.kernels_dir / "envsync-a", user_jupyter / "envsync-a"]
    with pytest.raises(KernelError, match="no kernel named"):
        kernels.remove(settings, "envsync-a")
    with pytest.raises(KernelError, match="not a kernel name"):
        kernels.remove(settings, "../python3")


def test_a_foreign_kernel_with_our_name_is_not_overwritten(tmp_path: Path, user_jupyter: Path) -> None:
    settings = settings_at(tmp_path / "home")
    theirs = user_jupyter / "envsync-demo"
    theirs.mkdir(parents=True)
    (theirs / "kernel.json").write_text(json.dumps({"argv": ["python"], "display_name": "mine"}))
    python = _fake_env(settings, "0123456789abcdef-cp311-aaaaaa")
    with pytest.raises(KernelError, match="envsync did not create"):
        _write(
            settings,
            project="demo",
            notebook="n",
            fingerprint="sha256:a",
            python=python,
            requires_python="==3.11.*",
            register_user=True,
        )
    assert json.loads((theirs / "kernel.json").read_text())["display_name"] == "mine"


def test_second_lock_of_a_project_gets_its_own_kernel_while_the_first_is_in_use(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    settings = settings_at(tmp_path / "home", local_index.url)
    lock1 = make_lock(local_index)
    lock2 = make_lock(local_index, {**BASE, "alpha": "1.0.0"})
    first = sync(lock=lock1, project="demo", notebook=tmp_path / "a.ipynb", settings=settings, hold=True)
    assert first.hold is not None
    try:
        second = sync(lock=lock2, project="demo", notebook=tmp_path / "b.ipynb", settings=settings)
        assert second.kernel_name == f"envsync-demo-{second.key}"
        plain = json.loads((settings.kernels_dir / "envsync-demo" / "kernel.json").read_text())
        assert plain["argv"][0] == str(first.python)  # the running gateway's kernel is untouched
        own = json.loads((settings.kernels_dir / second.kernel_name / "kernel.json").read_text())
        assert own["argv"][0] == str(second.python)
        assert own["metadata"]["envsync"]["fingerprint"] == lock2.fingerprint
        # The same lock as the running one keeps the plain name.
        assert (
            sync(lock=lock1, project="demo", notebook=tmp_path / "a.ipynb", settings=settings).kernel_name
            == "envsync-demo"
        )
    finally:
        first.hold.release()
    # Once nobody uses the first env, the next sync takes the plain name back.
    again = sync(lock=lock2, project="demo", notebook=tmp_path / "b.ipynb", settings=settings)
    assert again.kernel_name == "envsync-demo"
    plain = json.loads((settings.kernels_dir / "envsync-demo" / "kernel.json").read_text())
    assert plain["argv"][0] == str(second.python)


def test_project_slug_rules() -> None:
    assert kernels.kernel_name("sales-2024") == "envsync-sales-2024"
    for bad in ("Sales", "sales_2024", "sales.", "s/../x", "", "-" * 3, "a" * 65, "é"):
        with pytest.raises(ManifestError):
            rules.check_project(bad)


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no timing in tests
@given(st.text(max_size=80))
def test_any_accepted_slug_stays_a_single_path_component(text: str) -> None:
    try:
        slug = rules.check_project(text)
    except ManifestError:
        return
    root = Path("/kernels")
    assert (root / kernels.kernel_name(slug)).parent == root
    assert slug == slug.lower() and 1 <= len(slug) <= 64 and "/" not in slug and "." not in slug


def test_store_hold_is_what_marks_a_kernel_env_in_use(tmp_path: Path) -> None:
    settings = settings_at(tmp_path / "home")
    python = _fake_env(settings, "0123456789abcdef-cp311-aaaaaa")
    env = python.parent.parent
    assert not store.in_use(settings, env)
    with store.EnvHold(settings, env):
        assert store.in_use(settings, env)
    assert not store.in_use(settings, env)


def test_a_kernel_folder_without_kernel_json_is_written_into(tmp_path: Path) -> None:
    # Another sync may have made the folder and not yet renamed its kernel.json into it.
    settings = settings_at(tmp_path / "home")
    (settings.kernels_dir / "envsync-demo").mkdir(parents=True)
    python = _fake_env(settings, "0123456789abcdef-cp311-aaaaaa")
    name = _write(
        settings, project="demo", notebook="n", fingerprint="sha256:a", python=python, requires_python="==3.11.*"
    )
    assert name == "envsync-demo"
    assert kernels.list_kernels(settings, include_user=False)[0].python == python


def test_two_locks_of_one_project_racing_never_share_the_plain_name(tmp_path: Path, local_index: LocalIndex) -> None:
    import threading

    settings = settings_at(tmp_path / "home", local_index.url)
    locks = [make_lock(local_index), make_lock(local_index, {**BASE, "alpha": "1.0.0"})]
    envs = [sync(lock=lock, project="race", notebook=tmp_path / "n.ipynb", settings=settings).env for lock in locks]
    for _iteration in range(25):
        start = threading.Barrier(2)
        done = threading.Barrier(2)
        seen: dict[int, tuple[str, dict[str, Any]]] = {}
        errors: list[BaseException] = []

        def race(i: int) -> None:
            try:
                start.wait(timeout=30)
                res = sync(lock=locks[i], project="race", notebook=tmp_path / "n.ipynb", settings=settings, hold=True)
                try:
                    done.wait(timeout=30)  # both hold their env now
                    spec = json.loads((settings.kernels_dir / res.kernel_name / "kernel.json").read_text())
                    seen[i] = (res.kernel_name, spec)
                    done.wait(timeout=30)  # both have read before either lets go
                finally:
                    assert res.hold is not None
                    res.hold.release()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                done.abort()

        threads = [threading.Thread(target=race, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and len(seen) == 2
        assert seen[0][0] != seen[1][0]
        for i in (0, 1):
            name, spec = seen[i]
            assert spec["argv"][0] == str(_rec(envs[i]).python)
            assert spec["metadata"]["envsync"]["fingerprint"] == locks[i].fingerprint


def _rec(env: Path) -> store.EnvRecord:
    rec = store.read_ready(env)
    assert rec is not None
    return rec


def test_init_then_sync_leaves_the_notebook_kernelspec_as_jupyter_will_show_it(
    tmp_path: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envsync.cli import main

    home = tmp_path / "home"
    monkeypatch.setenv("ENVSYNC_HOME", str(home))
    monkeypatch.setenv("ENVSYNC_ALLOWED_INDEXES", local_index.url)
    nb = tmp_path / "Sales Report.ipynb"
    assert main(["init", str(nb), "alpha", "--index", local_index.url, "--python", "3.11", "--project", "sales"]) == 0
    assert main(["sync", str(nb)]) == 0
    kernel = json.loads((settings_at(home).kernels_dir / "envsync-sales" / "kernel.json").read_text())
    assert json.loads(nb.read_text())["metadata"]["kernelspec"] == {
        "display_name": kernel["display_name"],
        "name": "envsync-sales",
        "language": "python",
    }
    assert kernel["display_name"] == "sales (Python 3.11, envsync)"


def test_the_display_name_is_the_manifest_s_never_this_machine_s() -> None:
    assert kernels.display_name("sales", "==3.11.*") == "sales (Python 3.11, envsync)"
    assert kernels.display_name("sales", ">=3.10, <3.13") == "sales (Python >=3.10,<3.13, envsync)"
