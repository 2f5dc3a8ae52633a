"""The hashed requirements format: what the installers install from, and what export writes.

Import reads plain requirement lines back out of any requirements.txt.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envsync import rules
from envsync.errors import EnvsyncError, LockError
from envsync.formats.files import read_text
from envsync.lock.model import Lock, LockedPackage, packages_for
from envsync.lock.targets import TARGETS, marker_environment


def hashed_requirements(packages: Iterable[LockedPackage]) -> str:
    """A requirements file pinning each package to its version and every locked artifact hash.

    Names, versions and hashes come from someone else's notebook: each is checked so
    that none can smuggle an option (`--index-url ...`) or a URL into the file.
    """
    lines = []
    for p in sorted(packages, key=lambda p: p.key):
        if not rules.is_package_name(p.name):
            raise LockError(f"lock: {p.name!r} is not a valid package name")
        try:
            Version(p.version)
        except InvalidVersion as exc:
            raise LockError(f"lock: {p.name} has an invalid version {p.version!r}") from exc
        if not rules.is_version_text(p.version):
            raise LockError(f"lock: {p.name} has an invalid version {p.version!r}")
        hashes = sorted({a.sha256 for a in (*p.wheels, *([p.sdist] if p.sdist else []))})
        if not hashes:
            raise LockError(f"lock: {p.name} {p.version} lists no artifact to install")
        for h in hashes:
            if not rules.is_sha256(h):
                raise LockError(f"lock: {p.name} {p.version} has a malformed sha256 {h!r}")
        lines.append(f"{canonicalize_name(p.name)}=={p.version} \\")
        lines.extend(f"    --hash=sha256:{h} \\" for h in hashes[:-1])
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    return "".join(line + "\n" for line in lines)


def export_requirements(lock: Lock, *, target: str, python: str) -> str:
    """A hashed requirements file for one platform, installable with --require-hashes."""
    pkgs = packages_for(lock, marker_environment(TARGETS[target], python))
    header = f"# envsync lock {lock.fingerprint}\n# for {target}, CPython {python}\n"
    indexes = sorted({p.index for p in pkgs if p.index})
    if len(indexes) == 1:
        header += f"--index-url {indexes[0]}\n"
    return header + hashed_requirements(pkgs)


def read_requirements_file(path: Path) -> list[str]:
    """Plain requirement lines of a requirements.txt (options and hashes are dropped)."""
    out = []
    for line in read_text(path).splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise EnvsyncError(f"{path}: option lines such as {line.split()[0]!r} are not imported")
        out.append(line.split(" --hash", 1)[0].rstrip(" \\"))
    return out
