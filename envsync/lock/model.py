"""The Lock: PEP 751's data model as JSON, its hashes, what it is resolved from, and what
applies to one platform."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envsync.errors import LockError
from envsync.lock.targets import TARGETS, marker_applies, marker_environment, pythons_in_range
from envsync.rules import canonical_name, is_artifact_file, is_index_url, is_package_name, is_sha256, shown

LOCK_VERSION = "1.0"
CREATED_BY = "envsync"

# What this process already knows to be valid, so that it is not parsed twice: version
# texts packaging accepted, and inputs digests computed (or recalled from a manifest this
# machine accepted before, see envsync.notebook.accepted).
_VALID_VERSIONS: set[str] = set()
_DIGESTS: dict[LockInputs, str] = {}


@dataclass(frozen=True)
class Artifact:
    """A wheel or sdist named by file name and sha256 (its URL comes from the index)."""

    name: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hashes": {"sha256": self.sha256}}


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    marker: str | None = None
    requires_python: str | None = None
    index: str | None = None
    wheels: tuple[Artifact, ...] = ()
    sdist: Artifact | None = None

    @property
    def key(self) -> str:
        return canonical_name(self.name)

    def hash_set(self) -> frozenset[tuple[str, str]]:
        arts = list(self.wheels) + ([self.sdist] if self.sdist else [])
        return frozenset((a.name, a.sha256) for a in arts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.marker:
            out["marker"] = self.marker
        if self.requires_python:
            out["requires-python"] = self.requires_python
        if self.index:
            out["index"] = self.index
        if self.sdist:
            out["sdist"] = self.sdist.to_dict()
        if self.wheels:
            out["wheels"] = [w.to_dict() for w in self.wheels]
        return out


@dataclass(frozen=True)
class Lock:
    requires_python: str
    packages: tuple[LockedPackage, ...]
    inputs: str
    fingerprint: str
    environments: tuple[str, ...] = ()
    created_by: str = CREATED_BY

    def to_dict(self) -> dict[str, Any]:
        return {
            "lock-version": LOCK_VERSION,
            "created-by": self.created_by,
            "requires-python": self.requires_python,
            "packages": [p.to_dict() for p in self.packages],
            "tool": {
                "envsync": {
                    "inputs": self.inputs,
                    "fingerprint": self.fingerprint,
                    "environments": list(self.environments),
                }
            },
        }

    def by_name(self) -> dict[str, list[LockedPackage]]:
        out: dict[str, list[LockedPackage]] = {}
        for p in self.packages:
            out.setdefault(p.key, []).append(p)
        return out


def _artifact(data: Mapping[str, Any], where: str) -> Artifact:
    name = data.get("name")
    hashes = data.get("hashes") or {}
    sha = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(name, str) or not is_artifact_file(name):
        raise LockError(f"lock entry {where} has an artifact without a valid file name: {str(name)[:80]!r}")
    if not isinstance(sha, str) or not is_sha256(sha):
        raise LockError(f"lock entry {where}: artifact {name} has no sha256 hash")
    return Artifact(name=name, sha256=sha.lower())


def lock_from_dict(data: Mapping[str, Any], *, known: bool = False) -> Lock:
    """Parse an embedded lock (already schema-checked) and verify it is self-consistent.

    `known`: this very content was accepted before by this same code, so its markers,
    requires-python ranges and versions are not parsed again; every other rule still runs.
    """
    packages = []
    for raw in data.get("packages", []):
        name = raw["name"]
        if not is_package_name(name):
            raise LockError(f"lock names an invalid package {shown(name)!r}")
        if raw.get("index") is not None and not is_index_url(raw["index"]):
            raise LockError(f"lock: {name} names an index that is not an http(s) URL: {shown(raw['index'])!r}")
        if raw.get("marker") and not known:
            _check_marker(raw["marker"], name)
        if raw.get("requires-python") and not known:
            _check_requires_python(raw["requires-python"], name)
        if known:
            _VALID_VERSIONS.add(raw["version"])
        pkg = LockedPackage(
            name=name,
            version=raw["version"],
            marker=raw.get("marker"),
            requires_python=raw.get("requires-python"),
            index=raw.get("index"),
            wheels=tuple(_artifact(w, name) for w in raw.get("wheels", [])),
            sdist=_artifact(raw["sdist"], name) if raw.get("sdist") else None,
        )
        packages.append(pkg)
    tool = data.get("tool", {}).get("envsync", {})
    lock = Lock(
        requires_python=data.get("requires-python", ""),
        packages=tuple(packages),
        inputs=tool.get("inputs", ""),
        fingerprint=tool.get("fingerprint", ""),
        environments=tuple(tool.get("environments", ())),
        created_by=data.get("created-by", CREATED_BY),
    )
    verify(lock)
    return lock


def _check_marker(marker: str, name: str) -> None:
    from packaging.markers import InvalidMarker, Marker

    from envsync.lock.targets import TARGETS, marker_applies, marker_environment

    try:
        Marker(marker)
    except InvalidMarker:
        raise LockError(f"lock: {name} has an invalid marker {marker[:80]!r}") from None
    # A marker can parse and still fail to evaluate (`python_version ~= "3"`): find out now.
    marker_applies(marker, marker_environment(next(iter(TARGETS.values())), "3.11"))


def _check_requires_python(text: str, name: str) -> None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise LockError(f"lock: {name} has an invalid requires-python {text[:80]!r}") from None


def verify(lock: Lock) -> None:
    """Refuse a lock that names a package twice for the same platforms, or was edited by hand."""
    seen: dict[tuple[str, str], str] = {}
    for p in lock.packages:
        _check_version(p)
        if not p.wheels and not p.sdist:
            raise LockError(f"lock: {p.name} {p.version} lists no artifact to install")
        slot = (p.key, p.marker or "")
        if slot in seen:
            raise LockError(
                f"lock names {p.name} twice ({seen[slot]} and {p.version}) for the same platforms",
                hint="re-create it with `envsync lock --upgrade`",
            )
        seen[slot] = p.version
    expected = compute_fingerprint(lock.packages)
    if lock.fingerprint != expected:
        raise LockError(
            "lock fingerprint does not match its packages: it was edited by hand or tampered with",
            hint="re-create it with `envsync lock --upgrade`, and review who changed it",
        )


def _check_version(p: LockedPackage) -> None:
    if p.version in _VALID_VERSIONS:
        return
    from packaging.version import InvalidVersion, Version

    try:
        Version(p.version)
    except InvalidVersion as exc:
        raise LockError(f"lock: {p.name} has an invalid version {p.version!r}") from exc
    _VALID_VERSIONS.add(p.version)


def _sha(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def compute_fingerprint(packages: Iterable[LockedPackage]) -> str:
    """Hash what gets installed (names, versions, markers, artifacts), nothing about who locked."""
    # requires-python decides whether a package installs, so it is part of what is hashed;
    # it is appended only when present so that locks without it keep their fingerprint.
    canon = sorted(
        [
            p.key,
            p.version,
            p.marker or "",
            sorted([a.name, a.sha256] for a in (*p.wheels, *([p.sdist] if p.sdist else []))),
            *([p.requires_python] if p.requires_python else []),
        ]
        for p in packages
    )
    return _sha(canon)


def compute_inputs(
    *,
    requires_python: str,
    dependencies: Iterable[str],
    environments: Iterable[str],
    index: str,
    kernel_requirements: Iterable[str],
) -> str:
    """Hash what a lock is resolved from; a lock whose inputs differ is stale."""
    from packaging.requirements import Requirement

    return _sha(
        {
            "requires-python": requires_python.replace(" ", ""),
            "dependencies": sorted(str(Requirement(d)) for d in dependencies),
            "environments": sorted(environments),
            "index": index.rstrip("/"),
            "kernel": sorted(kernel_requirements),
        }
    )


@dataclass(frozen=True)
class LockInputs:
    """What a lock is resolved from: the declared dependencies plus the kernel's own, for
    a Python range, target platforms and one index."""

    requires_python: str
    dependencies: tuple[str, ...]
    environments: tuple[str, ...]
    index: str
    kernel_requirements: tuple[str, ...]

    @property
    def digest(self) -> str:
        """The inputs hash a lock records (`tool.envsync.inputs`)."""
        known = _DIGESTS.get(self)
        if known is not None:
            return known
        _DIGESTS[self] = digest = compute_inputs(
            requires_python=self.requires_python,
            dependencies=self.dependencies,
            environments=self.environments,
            index=self.index,
            kernel_requirements=self.kernel_requirements,
        )
        return digest

    def remember_digest(self, digest: str) -> None:
        """This digest was computed for these very inputs before: take it without packaging."""
        _DIGESTS[self] = digest

    @property
    def requirements(self) -> tuple[str, ...]:
        """Everything the resolver is asked for, the kernel's requirements last."""
        return (*self.dependencies, *self.kernel_requirements)


def packages_for(lock: Lock, marker_env: Mapping[str, str]) -> list[LockedPackage]:
    """The packages that a platform with these marker values installs."""
    chosen: dict[str, LockedPackage] = {}
    for p in lock.packages:
        if marker_applies(p.marker, dict(marker_env)):
            if p.requires_python:
                from packaging.specifiers import SpecifierSet

                if not SpecifierSet(p.requires_python).contains(
                    marker_env.get("python_full_version", ""), prereleases=True
                ):
                    continue
            if p.key in chosen:
                raise LockError(f"lock gives two versions of {p.name} for one platform")
            chosen[p.key] = p
    return sorted(chosen.values(), key=lambda p: p.key)


def packages_for_target(lock: Lock, target: str, python: str) -> list[LockedPackage]:
    return packages_for(lock, marker_environment(TARGETS[target], python))


def covered_pythons(lock: Lock) -> list[str]:
    return pythons_in_range(lock.requires_python)
