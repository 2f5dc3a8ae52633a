"""The manifest in `metadata.envsync`: its model and the rules for what we accept.

A manifest arrives inside someone else's notebook, so everything in it is untrusted:
names, specifiers, markers, index URLs and the project slug are checked before use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from envsync.errors import ManifestError, MissingManifestError, RequirementError
from envsync.lock.model import Lock, LockInputs, lock_from_dict
from envsync.lock.targets import check_target_names, parse_requires_python, pythons_in_range
from envsync.notebook import accepted
from envsync.notebook.schema import MANIFEST_VERSION, validate_data
from envsync.rules import canonical_name, check_project, is_index_url
from envsync.settings import DEFAULT_ENVIRONMENTS, DEFAULT_INDEX, KERNEL_REQUIREMENTS


@dataclass(frozen=True)
class Manifest:
    project: str
    requires_python: str
    dependencies: tuple[str, ...] = ()
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
    index: str = DEFAULT_INDEX
    lock: Lock | None = None
    version: int = MANIFEST_VERSION

    @property
    def kernel_name(self) -> str:
        return f"envsync-{self.project}"

    @property
    def lock_inputs(self) -> LockInputs:
        """What this manifest's lock is resolved from (the kernel's own requirements included)."""
        return LockInputs(
            requires_python=self.requires_python,
            dependencies=self.dependencies,
            environments=self.environments,
            index=self.index,
            kernel_requirements=KERNEL_REQUIREMENTS,
        )

    @property
    def inputs(self) -> str:
        return self.lock_inputs.digest

    @property
    def lock_is_stale(self) -> bool:
        return self.lock is None or self.lock.inputs != self.inputs

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "project": self.project,
            "requires-python": self.requires_python,
            "dependencies": list(self.dependencies),
            "environments": list(self.environments),
        }
        if self.index != DEFAULT_INDEX:
            out["index"] = self.index
        if self.lock is not None:
            out["lock"] = self.lock.to_dict()
        return out

    def with_dependencies(self, deps: tuple[str, ...]) -> Manifest:
        return replace(self, dependencies=deps)


def parse_manifest(data: Any) -> Manifest:
    """Validate and build a Manifest; every rule on untrusted content is applied here.

    Content accepted before by this same code is rebuilt from what its first reading
    computed (see envsync.notebook.accepted); any other content is checked in full.
    """
    key, known = accepted.recall(data)
    if known is not None:
        # The shapes that name folders, URLs and platforms are checked every time (they cost
        # microseconds): what was remembered then only spares the schema and packaging.
        _check_shapes(data)
        lock = lock_from_dict(data["lock"], known=True) if "lock" in data else None
        manifest = _build(data, known.dependencies, lock)
        manifest.lock_inputs.remember_digest(known.inputs)
        return manifest
    validate_data(data)
    _check_shapes(data)
    parse_requires_python(data["requires-python"])
    pythons_in_range(data["requires-python"])
    deps = tuple(normalize_requirement(d) for d in data["dependencies"])
    check_duplicates(deps)
    manifest = _build(data, deps, lock_from_dict(data["lock"]) if "lock" in data else None)
    accepted.keep(key, accepted.Accepted(deps, manifest.inputs))
    return manifest


def _check_shapes(data: dict[str, Any]) -> None:
    check_project(data["project"])
    if "index" in data and not is_index_url(data["index"]):
        raise ManifestError(f"metadata.envsync.index {data['index'][:80]!r} is not an http(s) URL")
    check_target_names(tuple(data.get("environments", DEFAULT_ENVIRONMENTS)))


def _build(data: dict[str, Any], deps: tuple[str, ...], lock: Lock | None) -> Manifest:
    return Manifest(
        project=data["project"],
        requires_python=data["requires-python"],
        dependencies=deps,
        environments=tuple(data.get("environments", DEFAULT_ENVIRONMENTS)),
        index=data.get("index", DEFAULT_INDEX),
        lock=lock,
        version=data["version"],
    )


def manifest_from_notebook(meta_value: Any, shown: str) -> Manifest:
    if meta_value is None:
        raise MissingManifestError(
            f"{shown} has no envsync manifest",
            hint=f"add one with `envsync init {shown}`",
        )
    return parse_manifest(meta_value)


def normalize_requirement(text: str) -> str:
    """Accept a plain PEP 508 requirement from the index; refuse URLs, paths and options."""
    if not isinstance(text, str) or not text.strip():
        raise RequirementError("empty requirement")
    shown = text if len(text) <= 80 else text[:77] + "..."
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise RequirementError(f"requirement {shown!r} contains control characters")
    from packaging.requirements import InvalidRequirement, Requirement

    stripped = text.strip()
    if stripped.startswith("-"):
        raise RequirementError(
            f"{shown!r} is a command-line option, not a requirement",
            hint="options such as --index-url cannot be set through dependencies; use `envsync init --index`",
        )
    try:
        req = Requirement(stripped)
    except InvalidRequirement as exc:
        raise RequirementError(f"invalid requirement {shown!r}: {str(exc).splitlines()[0]}") from None
    if req.url:
        raise RequirementError(
            f"{shown!r} is a direct URL or local path dependency",
            hint="envsync locks packages from an index so every collaborator gets the same hashed files",
        )
    return str(req)


def check_duplicates(deps: tuple[str, ...]) -> None:
    from packaging.requirements import Requirement

    seen: dict[tuple[str, str], str] = {}
    for d in deps:
        req = Requirement(d)
        key = (canonical_name(req.name), str(req.marker or ""))
        if key in seen:
            raise RequirementError(f"{req.name} is declared twice ({seen[key]!r} and {d!r})")
        seen[key] = d


def default_project(path: Path) -> str:
    """A slug from the notebook's file name: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:64].strip("-")
    return slug or "notebook"


@dataclass
class ManifestEdit:
    """Declared-dependency edits computed before any resolution happens."""

    dependencies: tuple[str, ...]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def add_dependencies(current: tuple[str, ...], new: list[str]) -> ManifestEdit:
    """Add or replace requirements by name (a new specifier for the same name replaces it)."""
    from packaging.requirements import Requirement

    reqs = [normalize_requirement(n) for n in new]
    by_name = {canonical_name(Requirement(d).name): d for d in current}
    out = list(current)
    for r in reqs:
        key = canonical_name(Requirement(r).name)
        if key in by_name:
            out[out.index(by_name[key])] = r
        else:
            out.append(r)
        by_name[key] = r
    deps = tuple(out)
    check_duplicates(deps)
    return ManifestEdit(deps, added=reqs)


def remove_dependencies(current: tuple[str, ...], names: list[str]) -> ManifestEdit:
    from packaging.requirements import Requirement

    keys = {canonical_name(n) for n in names}
    present = {canonical_name(Requirement(d).name) for d in current}
    missing = sorted(keys - present)
    if missing:
        raise RequirementError(
            f"{missing[0]} is not a declared dependency",
            hint="`envsync show` lists what is declared",
        )
    kept = tuple(d for d in current if canonical_name(Requirement(d).name) not in keys)
    return ManifestEdit(kept, removed=sorted(keys))
