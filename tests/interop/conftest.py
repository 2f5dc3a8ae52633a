"""Real juv and marimo, installed with uv from PyPI into throwaway venvs once per session.

Their files are made by the tools themselves, so a change in how juv or marimo writes a
notebook shows here first. The tests that use them are marked `network`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
UV = shutil.which("uv", path=str(VENV_BIN)) or "uv"
JUV = "juv>=0.5,<0.6"
MARIMO = ["marimo>=0.25,<0.26", "nbformat>=5.10"]  # marimo's ipynb export needs nbformat

Tool = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without uv's or envsync's overrides (and with the dev venv's uv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "ENVSYNC_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _venv_with(where: Path, *requirements: str) -> Path:
    subprocess.run([UV, "venv", "--no-config", "--quiet", "--python", sys.executable, str(where)],
                   check=True, env=clean_env(), timeout=300)
    subprocess.run([UV, "pip", "install", "--no-config", "--quiet", "--python", str(where / "bin" / "python"), *requirements],
                   check=True, env=clean_env(), timeout=900)
    return where / "bin"


def _runner(binary: Path) -> Tool:
    def run(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                             env=clean_env(**env), cwd=cwd, timeout=900)
        assert res.returncode == 0, f"{binary.name} {' '.join(map(str, args))} failed:\n{res.stdout}\n{res.stderr}"
        return res
    return run


@pytest.fixture(scope="session")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop-tools")


@pytest.fixture(scope="session")
def juv(tools_dir: Path) -> Tool:
    return _runner(_venv_with(tools_dir / "juv", JUV) / "juv")


@pytest.fixture(scope="session")
def marimo(tools_dir: Path) -> Tool:
    return _runner(_venv_with(tools_dir / "marimo", *MARIMO) / "marimo")


@pytest.fixture(scope="session")
def uv() -> Tool:
    return _runner(Path(UV))


@pytest.fixture(scope="session")
def pip() -> Tool:
    return _runner(VENV_BIN / "pip")


@pytest.fixture
def public(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private envsync home, with PyPI (the default index) as the only index."""
    monkeypatch.setenv("ENVSYNC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ENVSYNC_ALLOWED_INDEXES", raising=False)
    yield tmp_path
