"""`envsync export --format pylock` is accepted by pip's own pylock.toml reader, not only uv's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envsync.cli import main
from envsync.settings import Settings
from tests.wheelhouse import LocalIndex

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"


@pytest.mark.network  # the venv is seeded with the newest pip from PyPI (pylock support: pip >= 25.1)
def test_exported_pylock_installs_with_pip(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "analysis.ipynb"
    assert main(["init", str(nb), "beta", "--index", local_index.url, "--python", "3.11"]) == 0
    out = tmp_path / "pylock.toml"
    assert main(["export", str(nb), "--format", "pylock", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["show", str(nb), "--json"]) == 0
    locked = {p["name"]: p["version"] for p in json.loads(capsys.readouterr().out)["packages"]}

    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "--no-config", "--seed", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    version = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(x) for x in version.split()[1].split(".")[:2])
    assert (major, minor) >= (25, 1), f"pip too old for pylock.toml: {version}"

    done = subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--isolated", "-r", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [python, "-c", "import alpha, beta; print(alpha.__version__, beta.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert shown == [locked["alpha"], locked["beta"]]
