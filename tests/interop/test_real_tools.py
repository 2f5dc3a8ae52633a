"""Round trips through files the real tools wrote: juv, marimo, uv and pip against PyPI.

import(export(x)) keeps the fingerprint where the format carries the lock (pylock, hashed
requirements for one target); where it cannot, the warning names what was lost.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from envsync.cli import main
from tests.interop.conftest import Tool

pytestmark = pytest.mark.network

OLD = "2024-06-01T00:00:00Z"


def envsync(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def manifest(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())["metadata"]["envsync"]
    return value


def locked(path: Path) -> dict[str, str]:
    return {p["name"]: p["version"] for p in manifest(path)["lock"]["packages"]}


def fingerprint(path: Path) -> str:
    value: str = manifest(path)["lock"]["tool"]["envsync"]["fingerprint"]
    return value


def test_a_juv_notebook_imports_at_the_versions_juv_locked(
    juv: Tool, uv: Tool, public: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = public / "juv.ipynb"
    juv("init", "--python", "3.11", nb, cwd=public)
    juv("stamp", nb, "--timestamp", OLD, cwd=public)
    juv("add", nb, "pandas", cwd=public)
    juv("lock", nb, cwd=public)
    juv_lock = tomllib.loads(json.loads(nb.read_text())["metadata"]["uv.lock"])
    juv_versions = {p["name"]: p["version"] for p in juv_lock["package"]}
    assert juv_versions["pandas"] == "2.2.2" and juv_versions["numpy"] == "1.26.4"

    code, _, err = envsync(capsys, "import", nb, nb)
    assert code == 0, err
    assert "keeping juv's locked versions of" in err
    ours = locked(nb)
    assert {name: ours[name] for name in juv_versions} == juv_versions

    # juv changes its header afterwards: the lock is still current, and the drift is named.
    juv("add", nb, "six", cwd=public)
    code, _, err = envsync(capsys, "lock", nb, "--check")
    assert code == 0
    assert "WARNING the juv `# /// script` header declares other dependencies than the manifest (only in the header: six>=" in err

    # The block written back is one uv reads; it cannot carry the lock, and says so.
    script = public / "juv_script.py"
    code, _, err = envsync(capsys, "export", nb, "--format", "pep723", "-o", script)
    assert code == 0, err
    assert "the lock's" in err and "pinned versions and their hashes are not in it" in err
    exported = uv("export", "--no-config", "--script", script, "--no-hashes", cwd=public).stdout
    assert "pandas==" in exported


def test_marimo_files_import_the_same_from_py_and_exported_ipynb(
    marimo: Tool, public: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = public / "app.py"
    app.write_text(
        "# /// script\n# requires-python = \">=3.11\"\n# dependencies = [\n#     \"six==1.16.0\",\n# ]\n# ///\n\n"
        "import marimo\n\n__generated_with = \"0.25.2\"\napp = marimo.App()\n\n\n@app.cell\ndef _():\n"
        "    import six\n    return (six,)\n\n\nif __name__ == \"__main__\":\n    app.run()\n"
    )
    marimo("export", "ipynb", app, "-o", public / "app-export.ipynb", cwd=public)
    assert "metadata" in json.loads((public / "app-export.ipynb").read_text())
    code, out, err = envsync(capsys, "import", public / "from-py.ipynb", app, "--json")
    assert code == 0, err
    assert json.loads(out)["source-kind"] == "marimo"
    code, _, err = envsync(capsys, "import", public / "app-export.ipynb", public / "app-export.ipynb")
    assert code == 0, err
    assert manifest(public / "app-export.ipynb")["dependencies"] == ["six==1.16.0"]
    assert fingerprint(public / "app-export.ipynb") == fingerprint(public / "from-py.ipynb")


def test_pips_pylock_keeps_its_versions_and_upgrade_can_move_them(
    pip: Tool, public: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (public / "in.txt").write_text("six<1.17\n")
    pip("lock", "--quiet", "-r", public / "in.txt", "-o", public / "pylock.toml", cwd=public)
    code, _, err = envsync(capsys, "import", public / "nb.ipynb", public / "pylock.toml", "--python", "3.11")
    assert code == 0, err
    assert manifest(public / "nb.ipynb")["dependencies"] == ["six"]
    assert locked(public / "nb.ipynb")["six"] == "1.16.0"
    code, _, err = envsync(capsys, "lock", public / "nb.ipynb", "--upgrade")
    assert code == 0, err
    assert locked(public / "nb.ipynb")["six"] != "1.16.0"


def test_uvs_pylock_imports_at_its_versions(uv: Tool, public: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (public / "in.txt").write_text("python-dateutil\nsix<1.17\n")
    uv("pip", "compile", "--no-config", "--quiet", public / "in.txt", "--universal", "--format", "pylock.toml",
       "-o", public / "pylock.toml", cwd=public)
    code, _, err = envsync(capsys, "import", public / "nb.ipynb", public / "pylock.toml", "--python", "3.11")
    assert code == 0, err
    theirs = {p["name"]: p["version"] for p in tomllib.loads((public / "pylock.toml").read_text())["packages"]}
    ours = locked(public / "nb.ipynb")
    assert {n: ours[n] for n in theirs} == theirs


def test_hashed_requirements_and_binder_files_install_with_pip_and_import_back(
    pip: Tool, public: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = ("--environment", "linux-x86_64", "--python", "3.11")
    nb = public / "nb.ipynb"
    code, _, err = envsync(capsys, "init", nb, "python-dateutil==2.9.0.post0", *one)
    assert code == 0, err
    req = public / "requirements.txt"
    assert envsync(capsys, "export", nb, "--format", "requirements", "--environment", "linux-x86_64", "-o", req)[0] == 0
    back = public / "back.ipynb"
    code, _, err = envsync(capsys, "import", back, req, *one)
    assert code == 0, err
    assert fingerprint(back) == fingerprint(nb)

    code, _, err = envsync(capsys, "export", nb, "--format", "binder", "-o", public / "binder")
    assert code == 0, err
    assert (public / "binder" / "runtime.txt").read_text() == "python-3.11\n"
    pip("install", "--quiet", "--dry-run", "--ignore-installed", "--require-hashes",
        "-r", public / "binder" / "requirements.txt", cwd=public)
