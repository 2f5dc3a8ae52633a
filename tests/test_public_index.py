"""A real stack locked against the public index (PyPI): coverage, size, and an install from the export.

Needs the internet (uv's cache makes re-runs quick); deselect with `-m "not network"`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.specifiers import SpecifierSet

from envsync.cli import main
from envsync.lock.targets import TARGETS, marker_environment, wheel_fits
from envsync.notebook import file as notebook
from envsync.settings import DEFAULT_ENVIRONMENTS, KERNEL_REQUIREMENTS

pytestmark = pytest.mark.network

STACK = ["numpy", "pandas", "matplotlib", "requests"]
PLATFORM_PACKAGES = ["numpy", "pandas", "matplotlib"]
PYTHON = "3.11"
VENV_BIN = Path(sys.executable).parent
UV = shutil.which("uv", path=str(VENV_BIN)) or "uv"


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("UV_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    env.pop("ENVSYNC_ALLOWED_INDEXES", None)
    return env


def uv(*args: str, cwd: Path, timeout: float = 900) -> None:
    res = subprocess.run(
        [UV, *args], capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=timeout
    )
    assert res.returncode == 0, f"uv {' '.join(args)} failed:\n{res.stderr}"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack locked by `envsync init` against PyPI (the default index)."""
    folder = tmp_path_factory.mktemp("public")
    path = folder / "stack.ipynb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENVSYNC_HOME", str(folder / "home"))
        mp.delenv("ENVSYNC_ALLOWED_INDEXES", raising=False)
        assert main(["init", str(path), *STACK, "--python", PYTHON]) == 0
    return path


def lock_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())["metadata"]["envsync"]["lock"]


def applies(pkg: dict[str, Any], target: str) -> bool:
    env = marker_environment(TARGETS[target], PYTHON)
    if pkg.get("marker") and not Marker(pkg["marker"]).evaluate(env):
        return False
    rp = pkg.get("requires-python")
    return not rp or SpecifierSet(rp).contains(env["python_full_version"], prereleases=True)


@pytest.mark.parametrize("target", DEFAULT_ENVIRONMENTS)
def test_every_package_has_a_hashed_wheel_for_each_default_target(locked: Path, target: str) -> None:
    packages = [p for p in lock_of(locked)["packages"] if applies(p, target)]
    names = {p["name"] for p in packages}
    assert {*STACK, *KERNEL_REQUIREMENTS} <= names
    # One version of each package per platform.
    assert len(names) == len(packages)
    for p in packages:
        fitting = [w for w in p.get("wheels", []) if wheel_fits(w["name"], TARGETS[target], PYTHON)]
        assert fitting, f"{p['name']} {p['version']} has no wheel for {target} CPython {PYTHON}"
        assert all(re.fullmatch(r"[0-9a-f]{64}", w["hashes"]["sha256"]) for w in fitting)
    for name in PLATFORM_PACKAGES:
        p = next(p for p in packages if p["name"] == name)
        platform_wheels = [
            w
            for w in p["wheels"]
            if not w["name"].endswith("-any.whl") and wheel_fits(w["name"], TARGETS[target], PYTHON)
        ]
        assert platform_wheels, f"{name} has no platform wheel for {target}"


def test_embedded_lock_is_under_40kb_while_uvs_pylock_is_over_300kb(locked: Path, tmp_path: Path) -> None:
    raw = locked.read_text(encoding="utf-8")
    manifest = json.loads(raw)["metadata"]["envsync"]
    without_lock = {k: v for k, v in manifest.items() if k != "lock"}
    embedded = len(raw.encode()) - len(notebook.splice_manifest(raw, without_lock).encode())

    reqs = tmp_path / "requirements.in"
    reqs.write_text("".join(f"{r}\n" for r in (*STACK, *KERNEL_REQUIREMENTS)))
    uv(
        "pip",
        "compile",
        "--no-config",
        "--universal",
        "--generate-hashes",
        "--python-version",
        PYTHON,
        str(reqs),
        "-o",
        "pylock.toml",
        cwd=tmp_path,
    )
    uv_size = (tmp_path / "pylock.toml").stat().st_size

    print(
        f"\nembedded lock in the notebook: {embedded / 1024:.1f} KB ({len(lock_of(locked)['packages'])} packages)"
    )
    print(f"uv pip compile --universal --generate-hashes -o pylock.toml: {uv_size / 1024:.1f} KB")
    assert embedded < 40 * 1024
    assert uv_size > 300 * 1024


def test_exported_pylock_installs_into_a_fresh_venv_and_pandas_is_the_locked_version(
    locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pylock.toml"
    assert main(["export", str(locked), "--format", "pylock", "-o", str(out)]) == 0
    uv("venv", "--no-config", "--quiet", "--python", PYTHON, str(tmp_path / "venv"), cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    uv(
        "pip",
        "install",
        "--no-config",
        "--python",
        str(python),
        "-r",
        str(out),
        "--preview-features",
        "pylock",
        cwd=tmp_path,
    )
    res = subprocess.run(
        [str(python), "-c", "import pandas; print(pandas.__version__)"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=True,
    )
    locked_pandas = {p["name"]: p["version"] for p in lock_of(locked)["packages"]}["pandas"]
    print(f"\nimport pandas in the fresh env: {res.stdout.strip()} (locked {locked_pandas})")
    assert res.stdout.strip() == locked_pandas
