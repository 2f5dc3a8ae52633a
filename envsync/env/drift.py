"""What an env really has installed, read from its `*.dist-info` directly, against its lock.

No subprocess and no import of the env's code: each distribution's METADATA is read
up to the end of its headers, and each file the install recorded is compared with
`envsync.env.files` (size and mtime; `deep` rehashes them). A 50-package env is
checked in tens of milliseconds, so every reuse of an env can afford it.
"""

from __future__ import annotations

import enum
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envsync.env import early_check, files, store
from envsync.env.files import FileProblem
from envsync.env.store import EnvRecord
from envsync.errors import DriftError
from envsync.lock.model import Lock, packages_for, verify
from envsync.rules import canonical_name
from envsync.settings import Settings


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
    return {name: version for name, (version, _info) in distributions(env).items()}


def distributions(env: Path) -> dict[str, tuple[str, Path]]:
    """Canonical name -> (version, its `*.dist-info` or `*.egg-info` folder) in the env."""
    out: dict[str, tuple[str, Path]] = {}
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
                out[canonical_name(found[0])] = (found[1], Path(entry.path))
    return out


def dist_infos(env: Path, names: Iterable[str]) -> dict[str, Path]:
    """The `*.dist-info` folder of each of `names` that is installed."""
    found = distributions(env)
    return {n: found[n][1] for n in names if n in found}


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
    MODIFIED = "modified"  # installed at the locked version, but files differ from its RECORD


@dataclass(frozen=True)
class Difference:
    name: str
    kind: DriftKind
    locked: str | None
    installed: str | None
    files: tuple[FileProblem, ...] = ()  # for MODIFIED: the files that differ


@dataclass(frozen=True)
class DriftReport:
    """How an env differs from its lock as it applies to the env's interpreter and platform."""

    env: Path
    fingerprint: str
    python_version: str
    differences: tuple[Difference, ...]
    ignored: tuple[str, ...] = ()  # the venv tool's own seed packages (pip), left out on purpose
    seconds: float = 0.0
    files_checked: int = 0  # recorded files compared (stat, or rehashed when deep)
    deep: bool = False

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

    @property
    def modified(self) -> list[Difference]:
        return self.of_kind(DriftKind.MODIFIED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": str(self.env),
            "fingerprint": self.fingerprint,
            "python": self.python_version,
            "clean": self.clean,
            "differences": [_difference(d) for d in self.differences],
            "ignored": list(self.ignored),
            "files-checked": self.files_checked,
            "deep": self.deep,
        }


def _difference(d: Difference) -> dict[str, Any]:
    out: dict[str, Any] = {"name": d.name, "kind": d.kind, "locked": d.locked, "installed": d.installed}
    if d.kind == DriftKind.MODIFIED:
        out["files"] = [{"path": f.path, "problem": f.problem} for f in d.files]
    return out


def expected(lock: Lock, marker_env: Mapping[str, str]) -> dict[str, str]:
    """Canonical name -> version that the lock installs on this interpreter and platform."""
    return {p.key: p.version for p in packages_for(lock, marker_env)}


def locked_in(env: EnvRecord, lock: Lock) -> dict[str, str]:
    """What `lock` installs in `env`: as its record says when it was built for this very lock.

    The fingerprint hashes every name, version, marker and Python range of the lock, and
    the record keeps the env's own marker values, so the choice made at the build holds
    (and is not remade with packaging's marker parser on every check).
    """
    if env.locked is not None and env.fingerprint == lock.fingerprint:
        return dict(env.locked)
    return expected(lock, env.marker_env)


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
    if a == b:
        return True
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def check(env: EnvRecord, lock: Lock, *, deep: bool = False) -> DriftReport:
    """Compare a built env with `lock`, evaluating markers for the env's own interpreter.

    Besides names and versions, each recorded file is compared by size and mtime, or
    rehashed when `deep`. An env without a file record is verified against RECORD.
    """
    start = time.perf_counter()
    want = locked_in(env, lock)
    have = installed(env.path)
    diffs, ignored = compare(want, have, seed=env.seed)
    differing = {d.name for d in diffs}
    same = [n for n in want if n not in differing]
    problems, checked, elsewhere = file_problems(env.path, same, deep=deep)
    modified = tuple(
        Difference(n, DriftKind.MODIFIED, want[n], have[n], tuple(problems[n])) for n in sorted(problems)
    )
    return DriftReport(
        env=env.path,
        fingerprint=lock.fingerprint,
        python_version=env.python_version,
        differences=tuple(sorted(diffs + modified, key=lambda d: d.name)),
        ignored=ignored,
        seconds=max(time.perf_counter() - start, elsewhere),  # stats started early took what they took
        files_checked=checked,
        deep=deep,
    )


def check_lock(
    *, lock: Lock, settings: Settings, python: str | None = None, deep: bool = False
) -> DriftReport:
    """How this machine's env of `lock` differs from it; DriftError when there is none yet.

    `python` names the interpreter whose env to check; `deep` rehashes every installed
    file instead of comparing sizes and mtimes.
    """
    verify(lock)
    key = None
    if python:
        from envsync.env import interpreters

        found = interpreters.find(
            lock.requires_python, request=python, cache=interpreters.cache_file(settings)
        )
        key = store.env_key(lock.fingerprint, found.tag)
    ready = store.ready_envs(settings, lock.fingerprint, key=key)
    if not ready:
        raise DriftError(
            "this machine has no environment for this lock yet", hint="run `envsync sync` to build it"
        )
    return check(ready[0], lock, deep=deep)


def file_problems(env: Path, names: Iterable[str], *, deep: bool = False) -> tuple[files.Problems, int, float]:
    """The files of `names` that differ from the env's record, how many were compared, and the
    seconds the stats took in the early check when they ran there (0 when they ran here)."""
    wanted = set(names)
    if deep:
        entries = files.load(env)
        if entries is not None:
            mine = {n: entries.get(n, []) for n in wanted}
            return files.deep_check(env, mine), files.count(mine), 0.0
    else:
        key = files.record_key(env)
        early = early_check.take(env, key)
        if early is not None:  # the same record, checked while this command started
            every, counts, seconds = early
            differ = {n: p for n, p in every.items() if n in wanted}
            return differ, sum(counts.get(n, 0) for n in wanted), seconds
        record = _record(env, key)
        if record is not None:
            cols = {n: record.get(n, _NO_FILES) for n in wanted}
            return files.fast_check(env, cols), files.count(cols), 0.0
    # Built before file records existed: verify against RECORD itself (slower, read-only).
    found, problems = files.verify(env, dist_infos(env, wanted))
    return problems, files.count(found) + sum(len(p) for p in problems.values()), 0.0


_NO_FILES = files.Columns([], [], [], "")
_last: tuple[tuple[str, files.RecordKey], files.Record] | None = None


def _record(env: Path, key: files.RecordKey | None) -> files.Record | None:
    """The env's file record, whose identity is `key`; the last one read is kept by that
    identity (a launch checks the same env before each kernel start, and a build or
    repair writes a new file)."""
    global _last
    if key is None:
        return None
    if _last is None or _last[0] != (str(env), key):
        record = files.load_columns(env)
        if record is None:
            return None
        _last = ((str(env), key), record)
    return _last[1]
