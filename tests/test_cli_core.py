"""The manifest and lock commands, through `main([...])`, on real files with real uv resolution.

Every command runs against the session's local PEP 503 index (tests/wheelhouse.py), so
nothing here needs the internet. One locked notebook is made per module and copied per test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envsync.cli import build_parser
from envsync.errors import ConcurrentModificationError
from envsync.notebook import file as notebook
from envsync.settings import Settings
from tests.manifests import (
    edit_manifest,
    locked_versions,
    manifest_of,
    refresh_fingerprint,
    tamper_first_hash,
)
from tests.support.cli import envsync
from tests.wheelhouse import LocalIndex, standard_index

VENV_BIN = Path(sys.executable).parent
UV = shutil.which("uv", path=str(VENV_BIN)) or "uv"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
DOCUMENTED_ERROR_CODES = {1, 2, 3}


# ---- helpers ---------------------------------------------------------------------------


def jupyter_bytes(nb: Any) -> bytes:
    """A notebook serialised exactly the way Jupyter (nbformat) saves it."""
    return (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under `folder` (envsync's home excluded) with its bytes."""
    out: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts[0] == "home":
            continue
        out[str(rel)] = p.read_bytes() if p.is_file() else None
    return out


def files_beside(path: Path) -> list[str]:
    """What is in the notebook's folder, envsync's home aside (no temp files left behind)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != "home")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("UV_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    env.update(extra)
    return env


def fresh_venv(where: Path) -> Path:
    """A new, empty virtual environment made by `uv venv`; returns its python."""
    subprocess.run(
        [UV, "venv", "--no-config", "--quiet", "--python", sys.executable, str(where)],
        check=True,
        env=clean_env(),
        cwd=where.parent,
        timeout=120,
    )
    return where / "bin" / "python"


def installed_version(python: Path, module: str) -> str:
    res = subprocess.run(
        [str(python), "-c", f"import {module}; print({module}.__version__)"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=True,
    )
    return res.stdout.strip()


PLAIN_NOTEBOOK: dict[str, Any] = {
    "cells": [
        {
            "cell_type": "markdown",
            "id": "4f1c2a9e",
            "metadata": {"editable": False},
            "source": [
                "# Análisis de ventas — ünïcödé ✓ 日本語\n",
                "\n",
                'Text with "quotes" and \\backslashes\\',
            ],
        },
        {
            "cell_type": "code",
            "execution_count": 7,
            "id": "b7d3e1f0",
            "metadata": {"collapsed": False, "tags": ["parameters"], "scrolled": True},
            "outputs": [
                {"name": "stdout", "output_type": "stream", "text": ["hello\n", "world\n"]},
                {
                    "data": {
                        "image/png": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==",
                        "text/plain": ["<Figure>"],
                    },
                    "execution_count": 7,
                    "metadata": {"needs_background": "light"},
                    "output_type": "execute_result",
                },
            ],
            "source": ["import math\n", "print('hello')\n", "math.pi"],
        },
        {"cell_type": "raw", "id": "c0ffee00", "metadata": {"format": "text/x-rst"}, "source": ""},
    ],
    "metadata": {
        "authors": [{"name": "Zoë"}],
        "celltoolbar": "Tags",
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {
            "codemirror_mode": {"name": "ipython", "version": 3},
            "name": "python",
            "version": "3.11.7",
        },
        "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}},
        "x-unknown-tool": {"nested": [1, 2.5, None, True, {"deep": ["é"]}]},
    },
    "nbformat": 4,
    "nbformat_minor": 5,
    "x_unknown_top_level": {"kept": "verbatim"},
}


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture
def nb(tmp_path: Path, locked_template: Path, settings: Settings) -> Path:
    """A private copy of the session's locked notebook."""
    path = tmp_path / "analysis.ipynb"
    shutil.copyfile(locked_template, path)
    return path


@pytest.fixture
def plain_nb(tmp_path: Path) -> Path:
    """A notebook as Jupyter saved it, without a manifest."""
    path = tmp_path / "plain.ipynb"
    path.write_bytes(jupyter_bytes(PLAIN_NOTEBOOK))
    return path


# ---- init ------------------------------------------------------------------------------


def test_init_creates_notebook_with_manifest_and_lock_including_kernel_packages(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "Sales Forecast.ipynb"
    r = envsync(capsys, "init", path, "alpha", "--index", local_index.url, "--python", "3.11")
    assert r.code == 0, r.err
    assert "created" in r.err and "3 packages" in r.err
    raw = path.read_bytes()
    data = json.loads(raw)
    # Saved the way Jupyter saves, so Jupyter's next save changes nothing.
    assert raw == jupyter_bytes(data)
    m = data["metadata"]["envsync"]
    assert m["version"] == 1
    assert m["project"] == "sales-forecast"
    assert m["dependencies"] == ["alpha"]
    assert m["requires-python"] == "==3.11.*"
    assert m["index"] == local_index.url
    assert data["metadata"]["kernelspec"]["name"] == "envsync-sales-forecast"
    versions = {p["name"]: p["version"] for p in m["lock"]["packages"]}
    # The kernel package (the ipykernel stand-in) and its dependency are locked with the user's.
    assert versions == {"alpha": "2.0.0", "ipykernel": "6.0.0", "comm": "0.2.0"}
    for p in m["lock"]["packages"]:
        assert p["wheels"], p
        assert all(SHA256.match(w["hashes"]["sha256"]) for w in p["wheels"])
    assert envsync(capsys, "lock", path, "--check").code == 0


def test_init_accepts_requirements_after_options(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nb.ipynb"
    r = envsync(capsys, "init", path, "--index", local_index.url, "--python", "3.11", "alpha")
    assert r.code == 0, r.err
    assert manifest_of(path)["dependencies"] == ["alpha"]


def test_messages_show_a_notebook_path_with_brackets_as_it_is(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "analysis [draft].ipynb"
    r = envsync(capsys, "init", path, "--no-lock")
    assert r.code == 0, r.err
    assert f"run `envsync lock {path}`" in r.err
    r = envsync(capsys, "show", path)
    assert r.out.startswith(str(path))


def test_show_prints_a_lock_marker_with_brackets_as_it_is(
    nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A valid PEP 508 marker from someone else's notebook; the lock stays self-consistent.
    marker = "sys_platform != '[/x]'"

    def set_marker(m: dict[str, Any]) -> None:
        next(p for p in m["lock"]["packages"] if p["name"] == "alpha")["marker"] = marker
        refresh_fingerprint(m)

    edit_manifest(nb, set_marker)
    r = envsync(capsys, "show", nb)
    assert r.code == 0, r.err
    assert f"alpha 2.0.0  ; {marker}" in r.out


def test_init_on_jupyter_saved_notebook_keeps_every_other_byte(
    plain_nb: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(plain_nb, 0o640)
    before = plain_nb.read_bytes()
    r = envsync(capsys, "init", plain_nb, "alpha", "--index", local_index.url, "--python", "3.11")
    assert r.code == 0, r.err
    assert "initialised" in r.err
    after = plain_nb.read_bytes()
    assert manifest_of(plain_nb)["project"] == "plain"
    # Removing our key gives back the original file, byte for byte.
    assert notebook.splice_manifest(after.decode("utf-8"), None).encode("utf-8") == before
    # And the result is what Jupyter itself would write for the new content.
    assert after == jupyter_bytes(json.loads(after))
    assert stat.S_IMODE(plain_nb.stat().st_mode) == 0o640
    assert files_beside(plain_nb) == ["plain.ipynb"]


def test_init_refuses_a_notebook_that_already_has_a_manifest(
    nb: Path, local_index: LocalIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    before = nb.read_bytes()
    r = envsync(capsys, "init", nb, "beta", "--index", local_index.url)
    assert r.code == 1
    assert r.errors == [f"ERROR {nb} already has an envsync manifest (project 'analysis')"]
    assert nb.read_bytes() == before


# ---- add / remove ----------------------------------------------------------------------


def test_add_relocks_and_reports_the_new_package_as_added(
    nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = envsync(capsys, "add", nb, "beta")
    assert r.code == 0, r.err
    assert "+ beta 1.0.0" in r.err
    assert manifest_of(nb)["dependencies"] == ["alpha", "beta"]
    assert locked_versions(nb)["beta"] == "1.0.0"
    assert envsync(capsys, "lock", nb, "--check").code == 0


def test_add_json_lists_the_added_package_in_the_diff(nb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = envsync(capsys, "add", nb, "beta", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["written"] is True
    assert out["packages"] == 4
    assert out["diff"]["changes"] == [{"name": "beta", "kind": "added", "old": None, "new": "1.0.0"}]
    assert out["fingerprint"] == manifest_of(nb)["lock"]["tool"]["envsync"]["fingerprint"]


def test_add_with_a_new_specifier_for_the_same_name_replaces_it(
    nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = envsync(capsys, "add", nb, "ALPHA<2", "--json")
    assert r.code == 0, r.err
    assert manifest_of(nb)["dependencies"] == ["ALPHA<2"]
    assert locked_versions(nb)["alpha"] == "1.1.0"
    assert json.loads(r.out)["diff"]["changes"] == [
        {"name": "alpha", "kind": "downgraded", "old": "2.0.0", "new": "1.1.0"}
    ]


def test_remove_relocks_and_the_package_disappears(nb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = envsync(capsys, "remove", nb, "Alpha")
    assert r.code == 0, r.err
    assert "- alpha 2.0.0" in r.err
    assert manifest_of(nb)["dependencies"] == []
    assert locked_versions(nb) == {"ipykernel": "6.0.0", "comm": "0.2.0"}


# ---- lock ------------------------------------------------------------------------------


def test_lock_check_exits_3_when_dependencies_change_without_network(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    private = standard_index(tmp_path / "private-index")
    try:
        monkeypatch.setenv("ENVSYNC_ALLOWED_INDEXES", private.url)
        path = tmp_path / "offline.ipynb"
        assert envsync(capsys, "init", path, "alpha", "--index", private.url, "--python", "3.11").code == 0
    finally:
        private.stop()
    # The index is gone: anything that needed it would fail now.
    r = envsync(capsys, "lock", path, "--check")
    assert (r.code, r.err) == (0, f"{path}: lock is current\n")

    edit_manifest(path, lambda m: m["dependencies"].append("beta"))
    before = path.read_bytes()
    r = envsync(capsys, "lock", path, "--check")
    assert r.code == 3
    assert r.errors == [
        f"ERROR the lock in {path} is stale: dependencies, Python range, targets or index changed since it was made"
    ]
    assert f"hint: run `envsync lock {path}`" in r.err
    assert path.read_bytes() == before


def test_lock_keeps_pins_and_upgrade_package_moves_only_that_package(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pins.ipynb"
    assert (
        envsync(
            capsys, "init", path, "alpha<1.1", "comm<0.2", "--index", local_index.url, "--python", "3.11"
        ).code
        == 0
    )
    assert locked_versions(path) == {"alpha": "1.0.0", "comm": "0.1.0", "ipykernel": "6.0.0"}

    # Relax both constraints: the existing pins stay until an upgrade is asked for.
    assert envsync(capsys, "add", path, "alpha", "comm").code == 0
    assert manifest_of(path)["dependencies"] == ["alpha", "comm"]
    r = envsync(capsys, "lock", path)
    assert r.code == 0 and "(unchanged)" in r.err
    assert locked_versions(path) == {"alpha": "1.0.0", "comm": "0.1.0", "ipykernel": "6.0.0"}

    r = envsync(capsys, "lock", path, "--upgrade-package", "alpha", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["diff"]["changes"] == [
        {"name": "alpha", "kind": "upgraded", "old": "1.0.0", "new": "2.0.0"}
    ]
    assert locked_versions(path) == {"alpha": "2.0.0", "comm": "0.1.0", "ipykernel": "6.0.0"}


# ---- show ------------------------------------------------------------------------------


def test_show_json_reports_project_kernel_fingerprint_staleness_and_packages(
    nb: Path, local_index: LocalIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    r = envsync(capsys, "show", nb, "--json")
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert s["project"] == "analysis"
    assert s["kernel"] == "envsync-analysis"
    assert s["fingerprint"] == manifest_of(nb)["lock"]["tool"]["envsync"]["fingerprint"]
    assert s["locked"] is True and s["stale"] is False
    assert s["index"] == local_index.url
    assert s["dependencies"] == ["alpha"]
    assert s["packages"] == [
        {"name": "alpha", "version": "2.0.0", "marker": None, "files": 1},
        {"name": "comm", "version": "0.2.0", "marker": None, "files": 1},
        {"name": "ipykernel", "version": "6.0.0", "marker": None, "files": 1},
    ]

    edit_manifest(nb, lambda m: m.update({"requires-python": "==3.12.*"}))
    assert json.loads(envsync(capsys, "show", nb, "--json").out)["stale"] is True


# ---- diff ------------------------------------------------------------------------------


def test_diff_reports_added_removed_upgraded_downgraded_in_pep440_order(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1.10 > 1.9 in PEP 440 but not as strings.
    local_index.add("pep440-order-demo", "1.9")
    local_index.add("pep440-order-demo", "1.10")
    old, new = tmp_path / "old.ipynb", tmp_path / "new.ipynb"
    common = ("--index", local_index.url, "--python", "3.11")
    assert envsync(capsys, "init", old, "alpha", "beta", "pep440-order-demo==1.9", *common).code == 0
    assert envsync(capsys, "init", new, "alpha<1.1", "gamma", "pep440-order-demo==1.10", *common).code == 0

    r = envsync(capsys, "diff", old, new, "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["changes"] == [
        {"name": "alpha", "kind": "downgraded", "old": "2.0.0", "new": "1.0.0"},
        {"name": "beta", "kind": "removed", "old": "1.0.0", "new": None},
        {"name": "gamma", "kind": "added", "old": None, "new": "0.5.0"},
        {"name": "pep440-order-demo", "kind": "upgraded", "old": "1.9", "new": "1.10"},
    ]
    assert d["requires-python"] is None and d["environments"] is None
    assert d["hash-changes"] == 0

    r = envsync(capsys, "diff", new, old)
    assert r.code == 0
    for line in ("↑ alpha 1.0.0 → 2.0.0", "+ beta 1.0.0", "- gamma 0.5.0", "↓ pep440-order-demo 1.10 → 1.9"):
        assert line in r.err


def test_diff_reports_requires_python_and_environment_changes(
    nb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Widen the Python range and narrow the targets by hand, then re-lock for real. (Not
    # `init --python 3.12`: uv then tries to download a 3.12 it will not use; see report.)
    other = tmp_path / "linux-only.ipynb"
    shutil.copyfile(nb, other)
    edit_manifest(other, lambda m: m.update({"requires-python": ">=3.11", "environments": ["linux-x86_64"]}))
    r = envsync(capsys, "lock", other)
    assert r.code == 0, r.err
    d = json.loads(envsync(capsys, "diff", nb, other, "--json").out)
    assert d["changes"] == []
    assert d["requires-python"] == ["==3.11.*", ">=3.11"]
    assert d["environments"] == [
        ["linux-aarch64", "linux-x86_64", "macos-arm64", "macos-x86_64", "windows-x86_64"],
        ["linux-x86_64"],
    ]
    r = envsync(capsys, "diff", nb, other)
    assert "requires-python: ==3.11.* → >=3.11" in r.err
    assert (
        "target environments: linux-aarch64, linux-x86_64, macos-arm64, macos-x86_64, windows-x86_64 → linux-x86_64"
        in r.err
    )


def test_diff_reports_a_hash_change_at_the_same_version_as_hashes_changed(
    nb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = tmp_path / "tampered.ipynb"
    shutil.copyfile(nb, tampered)
    edit_manifest(tampered, lambda m: (tamper_first_hash(m, "alpha"), refresh_fingerprint(m)))

    d = json.loads(envsync(capsys, "diff", nb, tampered, "--json").out)
    assert d["changes"] == [{"name": "alpha", "kind": "hashes-changed", "old": "2.0.0", "new": "2.0.0"}]
    assert d["hash-changes"] == 1
    assert d["fingerprints"]["old"] != d["fingerprints"]["new"]

    r = envsync(capsys, "diff", nb, tampered)
    assert r.code == 0
    assert "! alpha 2.0.0: SAME VERSION, DIFFERENT FILE HASHES" in r.err
    assert "WARNING 1 package(s) changed file hashes without changing version: review before running" in r.err


def test_lock_with_a_tampered_hash_but_the_old_fingerprint_is_refused(
    nb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = tmp_path / "tampered.ipynb"
    shutil.copyfile(nb, tampered)
    edit_manifest(tampered, lambda m: tamper_first_hash(m, "alpha"))
    before = tampered.read_bytes()
    for argv in (("diff", nb, tampered), ("show", tampered), ("lock", tampered, "--check")):
        r = envsync(capsys, *argv)
        assert r.code == 1, argv
        assert r.errors == [
            "ERROR lock fingerprint does not match its packages: it was edited by hand or tampered with"
        ]
        assert "Traceback" not in r.err
    assert tampered.read_bytes() == before


# ---- export ----------------------------------------------------------------------------


def test_export_requirements_writes_hashed_pins_that_uv_installs_with_require_hashes(
    nb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert envsync(capsys, "add", nb, "beta").code == 0
    req = tmp_path / "requirements.txt"
    r = envsync(capsys, "export", nb, "--format", "requirements", "--environment", "linux-x86_64", "-o", req)
    assert r.code == 0, r.err
    logical = req.read_text().replace("\\\n", " ")
    pins = [ln.split() for ln in logical.splitlines() if ln and not ln.startswith(("#", "--"))]
    assert [p[0] for p in pins] == ["alpha==2.0.0", "beta==1.0.0", "comm==0.2.0", "ipykernel==6.0.0"]
    for p in pins:
        assert p[1:] and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in p[1:]), p

    python = fresh_venv(tmp_path / "venv")
    subprocess.run(
        [UV, "pip", "install", "--no-config", "--python", str(python), "--require-hashes", "-r", str(req)],
        check=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert installed_version(python, "alpha") == "2.0.0"
    assert installed_version(python, "beta") == "1.0.0"


def test_export_pylock_writes_pep751_toml_that_uv_installs(
    nb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pylock.toml"
    r = envsync(capsys, "export", nb, "--format", "pylock", "-o", out)
    assert r.code == 0, r.err
    doc = tomllib.loads(out.read_text())
    assert doc["lock-version"] == "1.0"
    assert doc["created-by"] == "envsync"
    assert doc["requires-python"] == "==3.11.*"
    assert {p["name"]: p["version"] for p in doc["packages"]} == {
        "alpha": "2.0.0",
        "comm": "0.2.0",
        "ipykernel": "6.0.0",
    }
    for p in doc["packages"]:
        for w in p["wheels"]:
            assert w["url"].endswith("/" + w["name"])
            assert SHA256.match(w["hashes"]["sha256"])

    python = fresh_venv(tmp_path / "venv")
    subprocess.run(
        [
            UV,
            "pip",
            "install",
            "--no-config",
            "--python",
            str(python),
            "-r",
            str(out),
            "--preview-features",
            "pylock",
        ],
        check=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert installed_version(python, "alpha") == "2.0.0"
    assert installed_version(python, "comm") == "0.2.0"


# ---- errors ----------------------------------------------------------------------------


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _with_manifest(nb: Path, value: Any) -> Path:
    nb.write_text(notebook.splice_manifest(nb.read_text(), value))
    return nb


def after(_effect: None, *argv: Any) -> list[Any]:
    """The command line to run once `_effect` (evaluated first, as an argument) has happened."""
    return list(argv)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.update({key: value})


# (case id) -> builder(tmp_path, nb, plain_nb, monkeypatch) -> argv;  exit code;  text in the ERROR line
ERROR_CASES: dict[str, tuple[Callable[..., list[Any]], int, str]] = {
    "missing-file": (
        lambda t, nb, plain, mp: ["add", t / "missing.ipynb", "alpha"],
        1,
        "missing.ipynb: no such file",
    ),
    "directory": (lambda t, nb, plain, mp: ["show", t], 1, "is a directory, not a notebook"),
    "invalid-json": (
        lambda t, nb, plain, mp: ["show", _write(t / "x.ipynb", "{cells: []}")],
        1,
        "is not valid JSON (line 1, column 2",
    ),
    "truncated-json": (
        lambda t, nb, plain, mp: [
            "lock",
            _write(t / "x.ipynb", nb.read_bytes()[: len(nb.read_bytes()) // 2]),
        ],
        1,
        "is not valid JSON",
    ),
    "not-utf8": (
        lambda t, nb, plain, mp: ["show", _write(t / "x.ipynb", b"\xff\xfe{}")],
        1,
        "is not UTF-8 text",
    ),
    "json-not-a-notebook": (
        lambda t, nb, plain, mp: ["show", _write(t / "x.ipynb", '{"name": "x"}')],
        1,
        "is JSON but not a Jupyter notebook",
    ),
    "json-array": (
        lambda t, nb, plain, mp: ["show", _write(t / "x.ipynb", "[1, 2]")],
        1,
        "is JSON but not a Jupyter notebook",
    ),
    "nbformat-3": (
        lambda t, nb, plain, mp: [
            "init",
            _write(
                t / "x.ipynb",
                json.dumps(
                    {"nbformat": 3, "nbformat_minor": 0, "cells": [], "worksheets": [], "metadata": {}}
                ),
            ),
        ],
        1,
        "is nbformat 3, envsync needs nbformat 4",
    ),
    "no-manifest": (lambda t, nb, plain, mp: ["lock", plain, "--check"], 1, "has no envsync manifest"),
    "manifest-is-a-list": (
        lambda t, nb, plain, mp: ["show", _with_manifest(plain, ["alpha"])],
        1,
        "metadata.envsync must be an object, found list",
    ),
    "manifest-unknown-key": (
        lambda t, nb, plain, mp: after(edit_manifest(nb, _set("colour", "blue")), "show", nb),
        1,
        "Additional properties are not allowed ('colour' was unexpected)",
    ),
    "manifest-version-2": (
        lambda t, nb, plain, mp: after(edit_manifest(nb, _set("version", 2)), "lock", nb),
        1,
        "manifest version 2 is newer than this envsync understands",
    ),
    "invalid-requirement": (
        lambda t, nb, plain, mp: ["add", nb, "alpha>>>1"],
        1,
        "invalid requirement 'alpha>>>1'",
    ),
    "file-url": (
        lambda t, nb, plain, mp: ["add", nb, "foo @ file:///etc/passwd"],
        1,
        "'foo @ file:///etc/passwd' is a direct URL or local path dependency",
    ),
    "git-url": (
        lambda t, nb, plain, mp: ["add", nb, "git+https://github.com/psf/requests"],
        1,
        "'git+https://github.com/psf/requests'",
    ),
    "option-as-requirement": (
        lambda t, nb, plain, mp: ["add", nb, "--", "--index-url=http://evil.example/simple"],
        1,
        "is a command-line option, not a requirement",
    ),
    "remove-undeclared": (
        lambda t, nb, plain, mp: ["remove", nb, "beta"],
        1,
        "beta is not a declared dependency",
    ),
    "resolution-failure": (
        lambda t, nb, plain, mp: ["add", nb, "no-such-package-anywhere"],
        1,
        "no-such-package-anywhere was not found in the package registry",
    ),
    "index-not-allowed-for-init": (
        lambda t, nb, plain, mp: ["init", plain, "alpha", "--index", "http://127.0.0.1:9/simple"],
        1,
        "uses the package index http://127.0.0.1:9/simple, which this machine has not allowed",
    ),
    "index-not-allowed-in-someone-elses-notebook": (
        lambda t, nb, plain, mp: after(mp.delenv("ENVSYNC_ALLOWED_INDEXES"), "add", nb, "beta"),
        1,
        "which this machine has not allowed",
    ),
    "export-stale-lock": (
        lambda t, nb, plain, mp: after(
            edit_manifest(nb, lambda m: m["dependencies"].append("beta")), "export", nb
        ),
        3,
        "is stale",
    ),
    "usage-conflicting-options": (
        lambda t, nb, plain, mp: ["lock", nb, "--upgrade", "--check"],
        2,
        "not allowed with argument",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_is_one_error_line_with_a_documented_exit_code_and_no_file_changes(
    case: str,
    tmp_path: Path,
    nb: Path,
    plain_nb: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build, code, text = ERROR_CASES[case]
    argv = build(tmp_path, nb, plain_nb, monkeypatch)
    before = snapshot(tmp_path)
    r = envsync(capsys, *argv)
    assert r.code == code, r.err
    assert code in DOCUMENTED_ERROR_CODES
    assert len(r.errors) == 1, r.err
    assert text in r.errors[0]
    assert "Traceback" not in r.err
    assert r.out == ""
    assert snapshot(tmp_path) == before


# (case id) -> command line after `envsync` ({nb}: a locked notebook, {plain}: one without a manifest);
# text in the ERROR line. Each is a mistake on the command line itself: exit 2, like argparse's own.
USAGE_CASES: dict[str, tuple[list[str], str]] = {
    "init-python-not-x-y": (["init", "{plain}", "--python", "3.x"], "--python '3.x' is not a version like 3.11"),
    "export-pylock-with-environment": (
        ["export", "{nb}", "--format", "pylock", "--environment", "linux-x86_64"],
        "apply to --format requirements only",
    ),
    "export-pylock-with-python": (["export", "{nb}", "--python", "3.11"], "apply to --format requirements only"),
    "export-unknown-environment": (
        ["export", "{nb}", "--format", "requirements", "--environment", "solaris-sparc"],
        "unknown target environment 'solaris-sparc'",
    ),
    "export-unknown-python": (
        ["export", "{nb}", "--format", "requirements", "--python", "3.x"],
        "unknown Python version '3.x'",
    ),
    "lock-upgrade-package-option": (
        ["lock", "{nb}", "--upgrade-package=--index-url=http://evil.example/simple"],
        "is not a package name",
    ),
    "envs-gc-negative-age": (["envs", "gc", "--older-than", "-1"], "is not a number of days"),
    "envs-gc-nan-age": (["envs", "gc", "--older-than", "nan"], "is not a number of days"),
    "stop-port-without-gateway": (["stop", "9"], "no envsync gateway is running on port 9"),
    "index-allow-not-http": (["index", "allow", "ftp://mirror.example/simple"], "is not an http(s) URL"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_usage_mistake_exits_2_with_one_error_line_and_no_file_changes(
    case: str, tmp_path: Path, nb: Path, plain_nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template, text = USAGE_CASES[case]
    argv = [a.format(nb=nb, plain=plain_nb) for a in template]
    before = snapshot(tmp_path)
    r = envsync(capsys, *argv)
    assert r.code == 2, r.err
    assert len(r.errors) == 1, r.err
    assert text in r.errors[0]
    assert "Traceback" not in r.err
    assert r.out == ""
    assert snapshot(tmp_path) == before


def test_non_allowed_index_error_says_how_to_allow_it(
    plain_nb: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    r = envsync(capsys, "init", plain_nb, "--index", "http://127.0.0.1:9/simple")
    assert r.code == 1
    assert (
        "hint: if you trust it: `envsync index allow http://127.0.0.1:9/simple` (or set ENVSYNC_ALLOWED_INDEXES)"
        in r.err
    )


def test_unreachable_allowed_index_is_one_error_and_no_notebook_changes(
    tmp_path: Path,
    plain_nb: Path,
    settings: Settings,
    no_uv_retries: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/simple"
    monkeypatch.setenv("ENVSYNC_ALLOWED_INDEXES", dead)
    before = snapshot(tmp_path)
    r = envsync(capsys, "init", plain_nb, "alpha", "--index", dead)
    assert r.code == 1
    assert r.errors == [f"ERROR cannot reach the package index {dead}"]
    assert "Traceback" not in r.err
    assert snapshot(tmp_path) == before


def test_resolution_failure_message_is_uvs_reason(nb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = envsync(capsys, "add", nb, "alpha>5")
    assert r.code == 1
    assert r.errors[0].startswith("ERROR cannot resolve")
    assert "only alpha<=2.0.0 is available and you require alpha>5" in r.errors[0]


def test_resolution_failure_message_reads_as_one_sentence(
    nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = envsync(capsys, "add", nb, "alpha>5")
    assert r.errors == [
        "ERROR cannot resolve: Because only alpha<=2.0.0 is available and you require alpha>5, "
        "we can conclude that your requirements are unsatisfiable."
    ]


def _run_without_root_override(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the envsync console script so that file modes bind, even when the tests run as root.

    root ignores permission bits (CAP_DAC_OVERRIDE), so `chmod a-w` alone proves nothing
    there; the child gets a capability bounding set without the override capabilities.
    """
    cmd = [str(VENV_BIN / "envsync"), *argv]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is missing: file modes cannot be made to bind")
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_notebook_is_refused_and_left_unchanged(
    what: str, nb: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    before = nb.read_bytes()
    target = nb if what == "file" else nb.parent
    mode = stat.S_IMODE(target.stat().st_mode)
    os.chmod(target, 0o444 if what == "file" else 0o555)
    try:
        r = _run_without_root_override(["add", str(nb), "beta"], clean_env())
        entries = files_beside(nb)
    finally:
        os.chmod(target, mode)
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")]
    expected = (
        f"ERROR {nb} is read-only"
        if what == "file"
        else f"ERROR cannot write into {nb.parent}: the folder is read-only"
    )
    assert errors == [expected]
    assert "Traceback" not in r.stderr
    assert nb.read_bytes() == before
    assert entries == ["analysis.ipynb"]


def test_write_refuses_a_notebook_changed_on_disk_since_it_was_read(nb: Path) -> None:
    stale = notebook.read_notebook(nb)
    data = json.loads(nb.read_bytes())
    data["cells"].append(
        {"cell_type": "markdown", "id": "other", "metadata": {}, "source": "saved by Jupyter"}
    )
    theirs = jupyter_bytes(data)
    nb.write_bytes(theirs)
    with pytest.raises(
        ConcurrentModificationError, match="changed on disk while envsync was working; nothing was written"
    ):
        notebook.write_manifest(stale, {"version": 1})
    assert nb.read_bytes() == theirs
    assert files_beside(nb) == ["analysis.ipynb"]


def test_add_refuses_when_the_notebook_is_saved_during_resolution(
    nb: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from envsync.lock import resolve as resolve_module

    real_resolve = resolve_module.resolve
    theirs = nb.read_bytes().replace(
        b'"cells": []', b'"cells": [{"cell_type": "raw", "id": "x", "metadata": {}, "source": "mine"}]'
    )
    assert theirs != nb.read_bytes()

    def resolve_while_someone_saves(*args: Any, **kwargs: Any) -> Any:
        nb.write_bytes(theirs)
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(resolve_module, "resolve", resolve_while_someone_saves)
    r = envsync(capsys, "add", nb, "beta")
    assert r.code == 1
    assert r.errors == [f"ERROR {nb} changed on disk while envsync was working; nothing was written"]
    assert nb.read_bytes() == theirs


# ---- verbosity and help ----------------------------------------------------------------


def test_verbose_shows_the_traceback_and_the_default_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "bad.ipynb", "{")
    quiet = envsync(capsys, "show", bad)
    loud = envsync(capsys, "show", bad, "--verbose")
    assert quiet.code == loud.code == 1
    assert "Traceback" not in quiet.err
    assert quiet.errors == loud.errors
    assert "Traceback (most recent call last)" in loud.err
    assert "NotebookError" in loud.err


def test_verbose_before_the_command_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "bad.ipynb", "{")
    r = envsync(capsys, "--verbose", "show", bad)
    assert r.code == 1
    assert "Traceback (most recent call last)" in r.err


def test_home_before_the_command_is_used(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # ENVSYNC_HOME points at a temp dir (settings fixture), so the bug cannot touch the real one.
    chosen = tmp_path / "chosen-home"
    r = envsync(capsys, "--home", chosen, "index", "allow", "http://example.org/simple")
    assert r.code == 0, r.err
    assert (chosen / "state" / "allowed-indexes.txt").read_text() == "http://example.org/simple\n"


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and nested action the parser knows, e.g. ("index", "allow")."""
    import argparse

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield (*prefix, name)
                    yield from walk(sub, (*prefix, name))

    return [(), *walk(build_parser(), ())]


@pytest.mark.parametrize("command", _command_paths(), ids=lambda c: " ".join(c) or "envsync")
def test_help_exits_0(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    r = envsync(capsys, *command, "--help")
    assert r.code == 0
    assert r.out.startswith("usage: envsync" + "".join(f" {c}" for c in command))
    assert r.err == ""


def test_help_of_the_installed_console_script_exits_0() -> None:
    res = subprocess.run([str(VENV_BIN / "envsync"), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "exit codes: 0 ok, 1 error, 2 usage" in res.stdout


def test_the_envsync_command_exits_with_mains_codes_and_its_whole_output(tmp_path: Path) -> None:
    """`python -m envsync` (the `envsync` command's `entry`) keeps every exit code and line."""
    from tests.support.processes import child_env

    nb = tmp_path / "nb.ipynb"
    shutil.copy(Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb", nb)
    home = str(tmp_path / "home")
    cases = {
        0: ["show", str(nb), "--json"],  # a whole JSON document on stdout
        2: ["show", str(nb), "--no-such-option"],
        3: ["check", str(nb)],  # no env built: drift
        1: ["show", str(tmp_path / "missing.ipynb")],
    }
    for code, args in cases.items():
        run = subprocess.run(
            [sys.executable, "-m", "envsync", "--home", home, *args], capture_output=True, text=True, env=child_env()
        )
        assert run.returncode == code, (args, run.stderr)
    shown = subprocess.run(
        [sys.executable, "-m", "envsync", "--home", home, "show", str(nb), "--json"],
        capture_output=True, text=True, env=child_env(), check=True,
    )
    assert json.loads(shown.stdout)["project"] == "quickstart"


def test_a_sync_at_a_terminal_pauses_its_spinner_while_files_are_checked_and_shows_every_step() -> None:
    """The file check shares its work with the other cores only in a process with no other
    thread: at a terminal, the spinner's thread must not be running while it checks."""
    import io
    import threading

    from rich.console import Console

    from envsync.cli.app import App
    from envsync.cli.views.progress import SyncView
    from envsync.env.install import Phase, ProgressEvent

    out = io.StringIO()
    app = App(verbose=False, json=False, home=None)
    app.__dict__["console"] = Console(file=out, force_terminal=True, width=100)
    threads = {}
    steps = [
        ProgressEvent(Phase.INSTALL, "installing 3 packages with uv", 0, 3),
        ProgressEvent(Phase.VERIFY, "checking what was installed against the lock"),
        ProgressEvent(Phase.VERIFY, "hashing the installed files against their RECORD"),
        ProgressEvent(Phase.KERNEL, "registering kernel for demo"),
    ]
    before = threading.active_count()  # other tests' threads may still run in this process
    with SyncView(app) as view:
        for event in steps:
            view.update(event)
            threads[event.message] = threading.active_count() - before
    assert threads == {
        "installing 3 packages with uv": 1,  # the spinner's
        "checking what was installed against the lock": 0,
        "hashing the installed files against their RECORD": 0,
        "registering kernel for demo": 1,  # spinning again
    }
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert [event.message for event in steps if event.message not in shown] == [], shown
