"""The reference stack as an envsync notebook, a hashed requirements file, a juv notebook and a marimo script.

`numpy pandas matplotlib requests ipykernel`, resolved from the public index with `uv pip
compile --universal --generate-hashes -o pylock.toml --python-version 3.11` and kept as
an envsync Lock with the linux-x86_64 cp311 wheels.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import child_env, run, uv_bin
from envsync.env import interpreters
from envsync.env.interpreters import Interpreter
from envsync.formats.hashed import hashed_requirements
from envsync.lock.model import Artifact, Lock, LockedPackage, compute_fingerprint, packages_for
from envsync.lock.targets import TARGETS, wheel_fits
from envsync.notebook.file import create_notebook, new_notebook_bytes, read_notebook, write_manifest
from envsync.notebook.manifest import Manifest
from envsync.settings import DEFAULT_INDEX

STACK = ("numpy", "pandas", "matplotlib", "requests", "ipykernel")
USER_STACK = STACK[:-1]  # what a notebook declares; the kernel is each tool's own business


@dataclass(frozen=True)
class Reference:
    notebook: Path  # envsync notebook carrying the lock
    lock: Lock
    interp: Interpreter
    requirements: Path  # the same pins, hashed, for uv and pip
    installed: int  # distributions the lock installs here


def resolve_lock(work: Path) -> Lock:
    """The reference stack as a Lock with only the wheels linux-x86_64 CPython 3.11 installs."""
    (work / "requirements.in").write_text("".join(f"{r}\n" for r in STACK))
    run([uv_bin(), "pip", "compile", "--no-config", "--universal", "--generate-hashes", "-o", "pylock.toml",
         "--python-version", "3.11", "requirements.in"], env=child_env(), cwd=work, timeout=600)
    data = tomllib.loads((work / "pylock.toml").read_text())
    packages = []
    for raw in data["packages"]:
        wheels = tuple(
            Artifact(w["url"].rsplit("/", 1)[1], w["hashes"]["sha256"])
            for w in raw.get("wheels", [])
            if wheel_fits(w["url"].rsplit("/", 1)[1], TARGETS["linux-x86_64"], "3.11")
        )
        sdist = raw.get("sdist")
        packages.append(
            LockedPackage(
                name=raw["name"], version=raw["version"], marker=raw.get("marker"), index=DEFAULT_INDEX,
                wheels=wheels,
                sdist=None if wheels or not sdist else Artifact(sdist["url"].rsplit("/", 1)[1], sdist["hashes"]["sha256"]),
            )
        )
    pkgs = tuple(packages)
    return Lock(requires_python="==3.11.*", packages=pkgs, inputs="sha256:" + "0" * 64,
                fingerprint=compute_fingerprint(pkgs))


def write_notebook(lock: Lock, path: Path, project: str = "bench") -> Lock:
    """Write a notebook whose manifest carries `lock` (its inputs made current); the lock it holds."""
    manifest = Manifest(project=project, requires_python=lock.requires_python, dependencies=STACK,
                        environments=("linux-x86_64",))
    current = dataclasses.replace(lock, inputs=manifest.inputs)
    create_notebook(path, new_notebook_bytes(manifest.kernel_name, project))
    write_manifest(read_notebook(path), dataclasses.replace(manifest, lock=current).to_dict())
    return current


def build(work: Path) -> Reference:
    nb = work / "bench.ipynb"
    lock = write_notebook(resolve_lock(work), nb)
    interp = interpreters.find(lock.requires_python)
    pkgs = packages_for(lock, interp.marker_env)
    req = work / "requirements.txt"
    req.write_text(hashed_requirements(pkgs))
    return Reference(nb, lock, interp, req, len(pkgs))


def pep723(packages: tuple[str, ...]) -> str:
    deps = "".join(f'#   "{p}",\n' for p in packages)
    return f'# /// script\n# requires-python = "==3.11.*"\n# dependencies = [\n{deps}# ]\n# ///\n'


def juv_notebook(path: Path) -> Path:
    """A juv notebook declaring the same packages (inline script metadata in its first cell)."""
    cell = {"cell_type": "code", "execution_count": None, "id": "meta", "metadata": {"jupyter": {"source_hidden": True}},
            "outputs": [], "source": pep723(USER_STACK).splitlines(keepends=True)}
    body = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def marimo_script(path: Path) -> Path:
    """A marimo notebook (a Python file) declaring the same packages for `--sandbox`."""
    path.write_text(
        pep723(USER_STACK)
        + "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    return\n\n\n"
        + 'if __name__ == "__main__":\n    app.run()\n'
    )
    return path
