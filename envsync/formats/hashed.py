"""The hashed requirements file an installer is given: each locked package pinned with its artifacts' hashes.

Apart from `requirements` (import and export), whose reader of requirements files needs
packaging's requirement grammar: a build writes this file without importing it.
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envsync import rules
from envsync.errors import LockError
from envsync.lock.model import LockedPackage


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
