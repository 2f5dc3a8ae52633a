"""Helpers for the env, kernel and sync tests: locks from local-index wheels, env probes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from envsync import proc
from envsync.lock.model import Artifact, Lock, LockedPackage, compute_fingerprint
from envsync.settings import Settings
from tests.wheelhouse import LocalIndex, sha256_file

# The kernel's stand-in and its dependency plus a small graph: what most tests lock.
BASE = {"ipykernel": "6.0.0", "comm": "0.2.0", "alpha": "1.1.0", "beta": "1.0.0"}
REPO = Path(__file__).resolve().parent.parent


def wheel(index: LocalIndex, name: str, version: str) -> Path:
    return next(w for w in index.files[name] if f"-{version}-" in w.name)


def make_lock(
    index: LocalIndex,
    versions: Mapping[str, str] = BASE,
    *,
    requires_python: str = ">=3.11",
    markers: Mapping[str, str] | None = None,
    hashes: Mapping[str, str] | None = None,
    url: str | None = None,
) -> Lock:
    """A lock of local-index wheels; `hashes` overrides a package's sha256 (a tampered lock)."""
    packages = []
    for name, version in sorted(versions.items()):
        w = wheel(index, name, version)
        sha = (hashes or {}).get(name) or sha256_file(w)
        packages.append(
            LockedPackage(
                name=name,
                version=version,
                marker=(markers or {}).get(name),
                index=url or index.url,
                wheels=(Artifact(w.name, sha),),
            )
        )
    pkgs = tuple(packages)
    return Lock(
        requires_python=requires_python,
        packages=pkgs,
        inputs="sha256:" + "0" * 64,
        fingerprint=compute_fingerprint(pkgs),
    )


def settings_at(home: Path, *indexes: str) -> Settings:
    return Settings(home=home, allowed_indexes=tuple(indexes))


def imported_versions(python: Path, modules: list[str]) -> dict[str, str]:
    """Import each module with the env's own python and report its __version__."""
    code = (
        "import importlib, json, sys\n"
        "print(json.dumps({m: importlib.import_module(m).__version__ for m in sys.argv[1:]}))\n"
    )
    res = proc.run([python, "-c", code, *modules], timeout=60)
    return dict(json.loads(res.stdout))


PYTHON = sys.executable


def tree_snapshot(path: Path) -> dict[str, float]:
    """Every file and folder under `path` with its mtime: proof that nothing was rewritten."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = os.lstat(full).st_mtime_ns
    out["."] = os.lstat(path).st_mtime_ns
    return out
