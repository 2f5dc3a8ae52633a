"""Core operations on a notebook's manifest: init, add, remove, lock, show, diff.

Each returns a dataclass; the CLI decides the words. Nothing is written unless the
whole operation (including resolution) succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envsync.errors import EnvsyncError, StaleLockError, UsageError
from envsync.lock.model import Lock
from envsync.lock.targets import check_target_names, pythons_in_range, requires_python_for
from envsync.notebook.file import (
    NotebookFile,
    create_notebook,
    new_notebook_bytes,
    read_notebook,
    write_manifest,
)
from envsync.notebook.manifest import (
    Manifest,
    add_dependencies,
    default_project,
    manifest_from_notebook,
    normalize_requirement,
    parse_manifest,
    remove_dependencies,
)
from envsync.rules import check_project
from envsync.settings import DEFAULT_ENVIRONMENTS, DEFAULT_INDEX, Settings, normalize_index

if TYPE_CHECKING:
    from envsync.lock.diff import LockDiff

# Kernelspecs and lock diffs are imported where they are used: `check` and `sync` only
# read a project (`load`, `lock_of`) and do not need them.

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Project:
    """A notebook and the manifest it carries."""

    notebook: NotebookFile
    manifest: Manifest

    @property
    def path(self) -> Path:
        return self.notebook.path


def load(path: Path) -> Project:
    """Read a notebook and its manifest; raises MissingManifestError when there is none."""
    nb = read_notebook(path)
    return Project(nb, manifest_from_notebook(nb.manifest_data, str(path)))


@dataclass(frozen=True)
class LockResult:
    path: Path
    manifest: Manifest
    diff: LockDiff
    written: bool
    created: bool = False
    notes: tuple[str, ...] = ()


Edit = Callable[[str], str]


def _save(nb: NotebookFile, manifest: Manifest, edit: Edit | None = None) -> NotebookFile:
    # Validate exactly what will be written, through the same reader every other command uses.
    data = manifest.to_dict()
    parse_manifest(data)
    return write_manifest(nb, data, edit=edit)


def init(
    path: Path,
    *,
    settings: Settings,
    python: str | None = None,
    project: str | None = None,
    dependencies: list[str] | None = None,
    environments: list[str] | None = None,
    index: str | None = None,
    lock_now: bool = True,
    progress: Progress | None = None,
    constraints: tuple[str, ...] = (),
    exclude_newer: str | None = None,
    check: Callable[[Lock], None] | None = None,
    edit: Edit | None = None,
) -> LockResult:
    """Add a manifest to a notebook (creating the notebook if it does not exist) and lock it.

    `python` is a minor version (`3.11`, meaning `==3.11.*`) or a range (`>=3.11,<3.14`);
    `constraints` and `exclude_newer` hold this first resolution to another tool's versions.
    """
    from envsync.lock import resolve as resolving

    slug = check_project(project) if project else default_project(path)
    requires = requires_python_of(python)
    envs = tuple(environments or DEFAULT_ENVIRONMENTS)
    check_target_names(envs)
    deps = tuple(normalize_requirement(d) for d in dependencies or [])
    manifest = Manifest(
        project=slug,
        requires_python=requires,
        dependencies=deps,
        environments=envs,
        index=normalize_index(index) if index else DEFAULT_INDEX,
    )
    settings.require_index_allowed(manifest.index)
    created = not path.exists()
    if not created:
        nb = read_notebook(path)
        if nb.manifest_data is not None:
            raise EnvsyncError(
                f"{path} already has an envsync manifest (project {nb.manifest_data.get('project')!r})"
                if isinstance(nb.manifest_data, dict)
                else f"{path} already has an envsync manifest",
                hint="`envsync add` / `envsync lock` change it",
            )
    if lock_now:
        lock = resolving.resolve(
            manifest.lock_inputs, settings=settings, progress=progress, constraints=constraints, exclude_newer=exclude_newer
        )
        if check is not None:
            check(lock)  # before anything is written
        manifest = replace(manifest, lock=lock)
    if created:
        # The display name the kernelspec will carry, so Jupyter has nothing to rewrite on open.
        from envsync.jupyter.kernelspecs import display_name

        create_notebook(path, new_notebook_bytes(manifest.kernel_name, display_name(slug, requires)))
    nb = read_notebook(path)
    _save(nb, manifest, edit)
    from envsync.lock.diff import diff

    return LockResult(path, manifest, diff(None, manifest.lock), written=True, created=created)


def requires_python_of(python: str | None) -> str:
    """requires-python for a --python value (default: this interpreter's minor)."""
    import platform

    text = python or ".".join(platform.python_version_tuple()[:2])
    requires = requires_python_for(text)
    if requires is None:
        raise UsageError(f"--python {text!r} is not a version like 3.11 or a range like '>=3.11,<3.14'")
    pythons_in_range(requires)
    return requires


def relock(
    project: Project,
    manifest: Manifest,
    *,
    settings: Settings,
    upgrade: bool = False,
    upgrade_packages: tuple[str, ...] = (),
    progress: Progress | None = None,
    header: tuple[Edit, str] | None = None,
) -> LockResult:
    """Resolve `manifest` (keeping current pins where possible) and write it back.

    `header` is a splice keeping the juv header cell in step, and the note that says so.
    """
    from envsync.lock.resolve import resolve

    new_lock = resolve(
        manifest.lock_inputs,
        settings=settings,
        previous=project.manifest.lock,
        upgrade=upgrade,
        upgrade_packages=upgrade_packages,
        progress=progress,
    )
    updated = replace(manifest, lock=new_lock)
    from envsync.lock.diff import diff

    changes = diff(project.manifest.lock, new_lock)
    if updated.to_dict() == project.manifest.to_dict() and header is None:
        return LockResult(project.path, updated, changes, written=False)
    _save(project.notebook, updated, header[0] if header else None)
    return LockResult(project.path, updated, changes, written=True, notes=(header[1],) if header else ())


def add(project: Project, requirements: list[str], *, settings: Settings, progress: Progress | None = None) -> LockResult:
    """Declare requirements (a juv header cell, if the notebook has one, gets the same edit) and re-lock."""
    from envsync.ops.interop import header_edit

    edit = add_dependencies(project.manifest.dependencies, requirements)
    header = header_edit(project.notebook, added=edit.added)
    return relock(project, project.manifest.with_dependencies(edit.dependencies), settings=settings, progress=progress, header=header)


def remove(project: Project, names: list[str], *, settings: Settings, progress: Progress | None = None) -> LockResult:
    """Drop declared requirements (and from a juv header cell, if there is one) and re-lock."""
    from envsync.ops.interop import header_edit

    edit = remove_dependencies(project.manifest.dependencies, names)
    header = header_edit(project.notebook, removed=edit.removed)
    return relock(project, project.manifest.with_dependencies(edit.dependencies), settings=settings, progress=progress, header=header)


def check_lock_current(project: Project) -> None:
    """Raise StaleLockError (exit 3) if the lock is missing or its inputs changed; no network."""
    m = project.manifest
    if m.lock is None:
        raise StaleLockError(f"{project.path} has no lock yet", hint=f"run `envsync lock {project.path}`")
    if m.lock_is_stale:
        raise StaleLockError(
            f"the lock in {project.path} is stale: dependencies, Python range, targets or index changed since it was made",
            hint=f"run `envsync lock {project.path}`",
        )


@dataclass(frozen=True)
class Summary:
    path: Path
    manifest: Manifest
    stale: bool

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        lock = m.lock
        return {
            "notebook": str(self.path),
            "project": m.project,
            "kernel": m.kernel_name,
            "requires-python": m.requires_python,
            "pythons": pythons_in_range(m.requires_python),
            "dependencies": list(m.dependencies),
            "environments": list(m.environments),
            "index": m.index,
            "locked": lock is not None,
            "stale": self.stale,
            "fingerprint": lock.fingerprint if lock else None,
            "packages": [
                {"name": p.name, "version": p.version, "marker": p.marker, "files": len(p.wheels) + (1 if p.sdist else 0)}
                for p in (lock.packages if lock else ())
            ],
        }


def show(project: Project) -> Summary:
    return Summary(project.path, project.manifest, project.manifest.lock_is_stale)


def diff_notebooks(old: Path, new: Path) -> LockDiff:
    """Lock differences between two versions of a notebook (a missing lock counts as empty)."""
    from envsync.lock.diff import diff

    a, b = load(old).manifest.lock, load(new).manifest.lock
    return diff(a, b)


def lock_of(project: Project) -> Lock:
    check_lock_current(project)
    assert project.manifest.lock is not None
    return project.manifest.lock
