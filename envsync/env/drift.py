"""What an env really has installed, read from its `*.dist-info` directly, against its lock.

No subprocess and no import of the env's code: each distribution's METADATA is read
up to the end of its headers. A 50-package env is checked in a few milliseconds, so
every reuse of an env can afford it.
"""

from __future__ import annotations

import enum
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envsync.env.store import EnvRecord
from envsync.lock.model import Lock, packages_for


def site_packages(env: Path) -> list[Path]:
    """The env's site-packages folders (lib/pythonX.Y/site-packages, or Lib/site-packages)."""
    if sys.platform == "win32":
        found = [env / "Lib" / "site-packages"]
    else:
        lib = env / "lib"
        try:
            found = [lib / e.name / "site-packages" for e in os.scandir(lib) if e.name.startswith("python")]
        except OSError:
            found = []
    return [p for p in found if p.is_dir()]


def installed(env: Path) -> dict[str, str]:
    """Canonical name -> version of every distribution installed in the env."""
    out: dict[str, str] = {}
    for folder in site_packages(env):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".dist-info"):
                meta = os.path.join(entry.path, "METADATA")
            elif entry.name.endswith(".egg-info"):
                meta = os.path.join(entry.path, "PKG-INFO")
            else:
                continue
            found = _name_version(meta) or _from_dirname(entry.name)
            if found:
                out[canonicalize_name(found[0])] = found[1]
    return out


def _name_version(path: str) -> tuple[str, str] | None:
    name = version = None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line in ("\n", "\r\n"):
                    break  # end of the headers; the long description follows
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if name and version:
                    break
    except OSError:
        return None
    return (name, version) if name and version else None


def _from_dirname(dirname: str) -> tuple[str, str] | None:
    # A dist-info whose METADATA is missing still names itself: name-version.dist-info.
    stem = dirname.rsplit(".", 1)[0]
    name, sep, version = stem.partition("-")
    return (name, version) if sep and version else None


class DriftKind(enum.StrEnum):
    """How one package of an env differs from its lock; the values are what `--json` shows."""

    MISSING = "missing"  # locked, not installed
    EXTRA = "extra"  # installed, not in the lock
    CHANGED = "changed"  # installed at another version


@dataclass(frozen=True)
class Difference:
    name: str
    kind: DriftKind
    locked: str | None
    installed: str | None


@dataclass(frozen=True)
class DriftReport:
    """How an env differs from its lock as it applies to the env's interpreter and platform."""

    env: Path
    fingerprint: str
    python_version: str
    differences: tuple[Difference, ...]
    ignored: tuple[str, ...] = ()  # the venv tool's own seed packages (pip), left out on purpose
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.differences

    def of_kind(self, kind: DriftKind) -> list[Difference]:
        return [d for d in self.differences if d.kind == kind]

    @property
    def missing(self) -> list[Difference]:
        return self.of_kind(DriftKind.MISSING)

    @property
    def extra(self) -> list[Difference]:
        return self.of_kind(DriftKind.EXTRA)

    @property
    def changed(self) -> list[Difference]:
        return self.of_kind(DriftKind.CHANGED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": str(self.env),
            "fingerprint": self.fingerprint,
            "python": self.python_version,
            "clean": self.clean,
            "differences": [
                {"name": d.name, "kind": d.kind, "locked": d.locked, "installed": d.installed}
                for d in self.differences
            ],
            "ignored": list(self.ignored),
        }


def expected(lock: Lock, marker_env: Mapping[str, str]) -> dict[str, str]:
    """Canonical name -> version that the lock installs on this interpreter and platform."""
    return {p.key: p.version for p in packages_for(lock, marker_env)}


def compare(
    want: Mapping[str, str], have: Mapping[str, str], *, seed: Mapping[str, str] | None = None
) -> tuple[tuple[Difference, ...], tuple[str, ...]]:
    """Differences between what the lock wants and what is installed.

    Packages the venv tool seeded (virtualenv's pip) are not the lock's business unless
    the lock names them: the pip backend needs pip in the env to install at all, and
    the uv backend has none. They are returned as `ignored`, so a report can say so.
    """
    diffs = []
    ignored = []
    for name in sorted(set(want) | set(have)):
        locked, inst = want.get(name), have.get(name)
        if inst is None:
            diffs.append(Difference(name, DriftKind.MISSING, locked, None))
        elif locked is None:
            if seed and name in seed:
                ignored.append(name)
            else:
                diffs.append(Difference(name, DriftKind.EXTRA, None, inst))
        elif not _same_version(locked, inst):
            diffs.append(Difference(name, DriftKind.CHANGED, locked, inst))
    return tuple(diffs), tuple(ignored)


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def check(env: EnvRecord, lock: Lock) -> DriftReport:
    """Compare a built env with `lock`, evaluating markers for the env's own interpreter."""
    start = time.perf_counter()
    diffs, ignored = compare(expected(lock, env.marker_env), installed(env.path), seed=env.seed)
    return DriftReport(
        env=env.path,
        fingerprint=lock.fingerprint,
        python_version=env.python_version,
        differences=diffs,
        ignored=ignored,
        seconds=time.perf_counter() - start,
    )
