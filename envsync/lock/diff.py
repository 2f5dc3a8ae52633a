"""How one lock differs from another, package by package (PEP 440 ordering for up and down)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envsync.lock.model import Lock, LockedPackage

if TYPE_CHECKING:
    from packaging.version import Version


class ChangeKind(enum.StrEnum):
    """What happened to one package between two locks; the values are what `--json` shows."""

    ADDED = "added"
    REMOVED = "removed"
    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"
    HASHES_CHANGED = "hashes-changed"
    ARTIFACTS_CHANGED = "artifacts-changed"
    MARKER_CHANGED = "marker-changed"


_INVERSE = {
    ChangeKind.ADDED: ChangeKind.REMOVED,
    ChangeKind.REMOVED: ChangeKind.ADDED,
    ChangeKind.UPGRADED: ChangeKind.DOWNGRADED,
    ChangeKind.DOWNGRADED: ChangeKind.UPGRADED,
}


@dataclass(frozen=True)
class PackageChange:
    name: str
    kind: ChangeKind
    old: str | None = None
    new: str | None = None

    def inverse(self) -> PackageChange:
        return PackageChange(self.name, _INVERSE.get(self.kind, self.kind), self.new, self.old)


@dataclass(frozen=True)
class LockDiff:
    """How one lock differs from another, per package and in its Python range and targets."""

    changes: tuple[PackageChange, ...] = ()
    requires_python: tuple[str, str] | None = None
    environments: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    fingerprints: tuple[str, str] = ("", "")
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.changes and self.requires_python is None and self.environments is None

    @property
    def hash_changes(self) -> tuple[PackageChange, ...]:
        """Same version, different artifacts: a re-upload or a tampered lock."""
        return tuple(c for c in self.changes if c.kind is ChangeKind.HASHES_CHANGED)

    def inverse(self) -> LockDiff:
        return LockDiff(
            changes=tuple(sorted((c.inverse() for c in self.changes), key=_change_key)),
            requires_python=self.requires_python[::-1] if self.requires_python else None,
            environments=self.environments[::-1] if self.environments else None,
            fingerprints=self.fingerprints[::-1],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "empty": self.empty,
            "changes": [
                {"name": c.name, "kind": c.kind, "old": c.old, "new": c.new} for c in self.changes
            ],
            "requires-python": list(self.requires_python) if self.requires_python else None,
            "environments": [list(e) for e in self.environments] if self.environments else None,
            "fingerprints": {"old": self.fingerprints[0], "new": self.fingerprints[1]},
            "hash-changes": len(self.hash_changes),
        }


def _change_key(c: PackageChange) -> tuple[str, str, str]:
    return (c.name, c.old or "", c.new or "")


def _versions(pkgs: list[LockedPackage]) -> str:
    from packaging.version import Version

    return ", ".join(sorted({p.version for p in pkgs}, key=Version))


def _order(pkgs: list[LockedPackage]) -> tuple[Version, ...]:
    from packaging.version import Version

    return tuple(sorted({Version(p.version) for p in pkgs}, reverse=True))


def _files(pkgs: list[LockedPackage]) -> dict[str, str]:
    return {name: sha for p in pkgs for name, sha in p.hash_set()}


def _same_file_other_hash(a: list[LockedPackage], b: list[LockedPackage]) -> bool:
    fa, fb = _files(a), _files(b)
    return any(fa[n] != fb[n] for n in fa.keys() & fb.keys())


def _package_change(name: str, a: list[LockedPackage], b: list[LockedPackage]) -> PackageChange | None:
    """How one package's entries changed; None when they did not."""
    if not a:
        return PackageChange(name, ChangeKind.ADDED, None, _versions(b))
    if not b:
        return PackageChange(name, ChangeKind.REMOVED, _versions(a), None)
    va, vb = _versions(a), _versions(b)
    order_a, order_b = _order(a), _order(b)
    if order_a != order_b:
        # Marker forks: compare every branch's version, newest first.
        kind = ChangeKind.UPGRADED if order_b > order_a else ChangeKind.DOWNGRADED
        return PackageChange(name, kind, va, vb)
    if _same_file_other_hash(a, b):
        return PackageChange(name, ChangeKind.HASHES_CHANGED, va, vb)
    if _files(a) != _files(b):
        # Files added or dropped (say, a new target platform): not a tampering sign.
        return PackageChange(name, ChangeKind.ARTIFACTS_CHANGED, va, vb)
    if sorted(p.marker or "" for p in a) != sorted(p.marker or "" for p in b):
        return PackageChange(name, ChangeKind.MARKER_CHANGED, va, vb)
    return None


def diff(old: Lock | None, new: Lock | None) -> LockDiff:
    """Per-package differences from `old` to `new` (PEP 440 ordering for up/down)."""
    old_by = old.by_name() if old else {}
    new_by = new.by_name() if new else {}
    changes: list[PackageChange] = []
    for key in sorted(set(old_by) | set(new_by)):
        # Named by its canonical key, so diff(B, A) names a package as diff(A, B) does.
        change = _package_change(key, old_by.get(key, []), new_by.get(key, []))
        if change is not None:
            changes.append(change)
    rp_old = old.requires_python if old else ""
    rp_new = new.requires_python if new else ""
    env_old = tuple(sorted(old.environments)) if old else ()
    env_new = tuple(sorted(new.environments)) if new else ()
    return LockDiff(
        changes=tuple(sorted(changes, key=_change_key)),
        requires_python=(rp_old, rp_new) if rp_old != rp_new else None,
        environments=(env_old, env_new) if env_old != env_new else None,
        fingerprints=(old.fingerprint if old else "", new.fingerprint if new else ""),
    )
