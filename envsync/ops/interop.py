"""import and export to other tools' files: which reader a source needs, how its locked
versions are kept, and what each export can and cannot carry (said as notes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envsync.errors import EnvsyncError, ResolutionError, UsageError
from envsync.formats.imported import Imported
from envsync.lock.model import Lock
from envsync.lock.targets import TARGETS, pythons_in_range
from envsync.notebook.file import NotebookFile
from envsync.ops.project import LockResult, Project, init, requires_python_of
from envsync.settings import Settings

if TYPE_CHECKING:
    from envsync.formats.k8s import K8sExport

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImportResult:
    result: LockResult
    kind: str
    notes: tuple[str, ...]


def read_source(source: Path, *, extras: tuple[str, ...] = (), groups: tuple[str, ...] = (), all_extras: bool = False) -> Imported:
    """The source file read by the reader its name calls for."""
    from envsync.formats import juv, pylock, pyproject, requirements

    if (extras or groups or all_extras) and source.name != "pyproject.toml":
        raise UsageError("--extra, --group and --all-extras apply to a pyproject.toml only")
    if source.suffix == ".ipynb":
        from envsync.notebook.file import read_notebook

        found = juv.read_notebook_source(read_notebook(source).data, str(source))
        if found is None:
            raise EnvsyncError(f"{source} has no `# /// script` metadata to import (neither a juv cell nor metadata.marimo.header)")
        return found
    if source.name == "pyproject.toml":
        return pyproject.read_pyproject(source, extras=extras, groups=groups, all_extras=all_extras)
    if source.name.startswith("pylock") and source.suffix == ".toml":
        return pylock.read_pylock(source)
    if source.suffix == ".py":
        return juv.read_script(source)
    return requirements.read_requirements_file(source)


def import_source(
    notebook: Path,
    source: Path,
    *,
    settings: Settings,
    python: str | None = None,
    project: str | None = None,
    index: str | None = None,
    environments: list[str] | None = None,
    extras: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
    all_extras: bool = False,
    juv_header: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Fill NOTEBOOK's manifest from SOURCE and lock it, keeping the versions SOURCE had locked."""
    imp = read_source(source, extras=extras, groups=groups, all_extras=all_extras)
    notes = list(imp.notes)
    asked_python = python
    if python is None and imp.requires_python and imp.whole_range:
        python = imp.requires_python
    elif python is None and imp.requires_python:
        lowest = pythons_in_range(imp.requires_python)[0]
        python = lowest
        notes.append(f"requires-python {imp.requires_python!r}: locking for {lowest} (pass --python {imp.requires_python!r} to cover the range)")
    requires_python_of(python)  # a bad --python is a usage error before anything is read from the index
    if index is None and imp.index:
        index = imp.index
        notes.append(f"index {imp.index} from {source.name}")
    check = _hash_check(imp)
    edit = _import_header_edit(notebook, source, imp, juv_header, python=asked_python, notes=notes)

    def run(constraints: tuple[str, ...]) -> LockResult:
        return init(
            notebook, settings=settings, python=python, project=project or imp.project, dependencies=imp.dependencies,
            environments=environments or imp.environments or None, index=index, progress=progress,
            constraints=constraints, exclude_newer=imp.exclude_newer, check=check, edit=edit,
        )

    try:
        res = run(tuple(imp.constraints))
    except ResolutionError as exc:
        if imp.exclude_newer and not exc.hint:
            exc.hint = f"{source.name} asks for files uploaded before {imp.exclude_newer} (exclude-newer), as the tool that wrote it resolved"
        if not imp.constraints or exc.message.startswith("cannot reach"):
            raise
        notes.append(f"the versions {source.name} locked do not resolve for every target ({exc.message}): resolved afresh")
        res = run(())
    if res.manifest.lock is not None and imp.constraints:
        notes.append(_kept(imp.constraints, res.manifest.lock))
    return ImportResult(res, imp.kind, tuple(notes))


def _import_header_edit(
    notebook: Path, source: Path, imp: Imported, choice: str | None, *, python: str | None, notes: list[str]
) -> Callable[[str], str] | None:
    """--keep-juv-header: the header declares what the manifest will; --drop-juv-header: the cell goes."""
    if choice is None:
        if imp.kind == "juv" and source.resolve() == notebook.resolve():
            notes.append("the juv `# /// script` cell stays; `envsync add`/`remove` will keep it in step (--drop-juv-header removes it)")
        return None
    if imp.kind != "juv" or source.resolve() != notebook.resolve():
        raise UsageError("--keep-juv-header and --drop-juv-header apply to a juv notebook imported into itself")
    from envsync.notebook.file import read_notebook
    from envsync.notebook.manifest import normalize_requirement

    nb = read_notebook(notebook)
    if choice == "drop":
        edit, note = header_removal(nb)
    else:
        deps = [normalize_requirement(d) for d in imp.dependencies]
        found = header_edit(nb, replace=deps, requires_python=requires_python_of(python) if python else None)
        if found is None:
            notes.append("the juv `# /// script` cell already declares what the manifest does")
            return None
        edit, note = found
    notes.append(note)
    return edit


def _hash_check(imp: Imported) -> Callable[[Lock], None] | None:
    if not imp.hashes:
        return None
    from envsync.formats.requirements import check_hashes

    return lambda lock: check_hashes(imp, lock)


def _kept(constraints: list[str], lock: Lock) -> str:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    locked = {(p.key, p.version) for p in lock.packages}
    wanted = {(canonicalize_name(r.name), s.version) for r in map(Requirement, constraints) for s in r.specifier if s.operator == "=="}
    names = {n for n, _ in wanted}
    moved = sorted(n for n, v in wanted if (n, v) not in locked and any(k == n for k, _ in locked))
    kept = len({n for n, v in wanted if (n, v) in locked})
    text = f"kept {kept} of {len(names)} locked versions"
    return text + (f"; moved: {', '.join(moved)}" if moved else "")


def requirements_for(lock: Lock, *, environment: str | None, python: str | None) -> str:
    """Hashed requirements for one target and Python the lock covers (default: here, lowest)."""
    from envsync.formats.requirements import export_requirements
    from envsync.lock.targets import current_target

    here = current_target()
    target = environment or (here.name if here else None)
    if target is None:
        raise EnvsyncError("this machine is none of the target platforms; pass --environment")
    if target not in lock.environments:
        raise EnvsyncError(f"the lock does not cover {target}", hint="covered: " + ", ".join(lock.environments))
    pythons = pythons_in_range(lock.requires_python)
    chosen = python or pythons[0]
    if chosen not in pythons:
        raise EnvsyncError(f"the lock does not cover Python {chosen}", hint="covered: " + ", ".join(pythons))
    return export_requirements(lock, target=target, python=chosen)


def export_pep723(project: Project) -> tuple[str, list[str]]:
    """The manifest's declared dependencies as a `# /// script` block, and what it cannot carry."""
    from envsync.formats import pep723

    m = project.manifest
    text = pep723.render(m.dependencies, m.requires_python)
    lost = ["the `# /// script` block carries declared dependencies and requires-python only: "
            f"the lock's {len(m.lock.packages) if m.lock else 0} pinned versions and their hashes are not in it"]
    if m.index.rstrip("/") != "https://pypi.org/simple":
        text = text.replace("# ///\n", "#\n# [tool.uv]\n" + f'# index-url = "{m.index}"\n' + "# ///\n", 1)
    return text, lost


def header_into_notebook(path: Path, block: str) -> str:
    """Write `block` into the notebook's juv cell (or a new first cell, as juv lays it out); the note."""
    import functools
    import secrets

    from envsync.formats import cells, juv
    from envsync.notebook.file import read_notebook, write_manifest

    nb = read_notebook(path)
    source = block.rstrip("\n")
    index = juv.script_cell(nb.data)
    edit: Callable[[str], str]
    if index is not None:
        old = juv.cell_text(nb.data["cells"][index])
        new = script_with_block(old, source)
        edit = _guarded(index, old, lambda raw: cells.replace_source(raw, index, new))
        note = f"wrote the `# /// script` block into cell {index + 1} of {path}"
    else:
        cell = {"cell_type": "code", "execution_count": None, "id": secrets.token_hex(4),
                "metadata": {"jupyter": {"source_hidden": True}}, "outputs": [], "source": source.splitlines(keepends=True)}
        edit = functools.partial(cells.insert_first, cell=cell)
        note = f"wrote the `# /// script` block as the first cell of {path}"
    write_manifest(nb, nb.manifest_data, edit=edit)
    return note


def script_with_block(existing: str | None, block: str) -> str:
    """A script's text with its `# /// script` block replaced (or put first)."""
    import re

    from envsync.formats import pep723

    if not existing:
        return block
    found = [m for m in re.finditer(pep723.REGEX, existing) if m.group("type") == "script"]
    if not found:
        return block + "\n" + existing
    m = found[0]
    return existing[: m.start()] + block.rstrip("\n") + existing[m.end() :]


def binder_files(lock: Lock) -> tuple[dict[str, str], list[str]]:
    """requirements.txt (hashed, linux-x86_64, lowest Python) and runtime.txt for repo2docker."""
    from envsync.formats.requirements import export_requirements

    if "linux-x86_64" not in lock.environments:
        raise EnvsyncError("the lock does not cover linux-x86_64, the platform Binder builds on",
                           hint="covered: " + ", ".join(lock.environments))
    python = pythons_in_range(lock.requires_python)[0]
    files = {
        "requirements.txt": export_requirements(lock, target="linux-x86_64", python=python),
        "runtime.txt": f"python-{python}\n",
    }
    others = [t for t in lock.environments if t != "linux-x86_64" and t in TARGETS]
    lost = [f"Binder files cover linux-x86_64 with Python {python} only"
            + (f" (the lock also covers {', '.join(others)})" if others else "")]
    return files, lost


def k8s_files(project: Project, lock: Lock, *, registry: str | None = None) -> K8sExport:
    """Containerfile, requirements, kernelspec and README for gateway_provisioners' KubernetesProvisioner."""
    from importlib.metadata import version

    from envsync.formats.k8s import export_k8s
    from envsync.jupyter.kernelspecs import display_name

    m = project.manifest
    return export_k8s(lock, project=m.project, kernel_name=m.kernel_name, display_name=display_name(m.project, m.requires_python),
                      notebook=project.path.name, uv_version=version("uv"), registry=registry)


def header_drift(project: Project) -> str | None:
    """A warning when the notebook's juv/marimo header declares other dependencies than the manifest."""
    from packaging.requirements import Requirement

    from envsync.formats.juv import header_meta
    from envsync.formats.pep723 import declared

    try:
        found = header_meta(project.notebook.data, str(project.path))
    except EnvsyncError:
        return None
    if found is None:
        return None
    meta, kind = found
    theirs = sorted(str(Requirement(d)) for d in declared(meta))
    ours = sorted(str(Requirement(d)) for d in project.manifest.dependencies)
    if theirs == ours:
        return None
    only_header = sorted(set(theirs) - set(ours))
    only_manifest = sorted(set(ours) - set(theirs))
    parts = ([f"only in the header: {', '.join(only_header)}"] if only_header else []) + (
        [f"only in the manifest: {', '.join(only_manifest)}"] if only_manifest else [])
    return f"the {kind} `# /// script` header declares other dependencies than the manifest ({'; '.join(parts)})"


def header_edit(
    nb: NotebookFile, *, added: Sequence[str] = (), removed: Sequence[str] = (), requires_python: str | None = None,
    replace: Sequence[str] | None = None,
) -> tuple[Callable[[str], str], str] | None:
    """A splice giving the juv header cell the same edit as the manifest, and the note saying so."""
    from envsync.formats import cells, juv, pep723

    try:
        index = juv.script_cell(nb.data)
    except EnvsyncError:
        return None  # a header that does not parse is left as it is
    if index is None:
        return None
    source = juv.cell_text(nb.data["cells"][index])
    meta = pep723.block(source, where=str(nb.path))
    current = pep723.declared(meta or {})
    deps = list(replace) if replace is not None else juv.edited_requirements(current, added=added, removed=removed)
    new = juv.header_with(source, deps, requires_python)
    if new == source:
        return None
    return _guarded(index, source, lambda raw: cells.replace_source(raw, index, new)), (
        f"the juv `# /// script` cell (cell {index + 1}) now declares: {', '.join(deps) or 'nothing'}"
    )


def header_removal(nb: NotebookFile) -> tuple[Callable[[str], str], str]:
    """A splice removing the juv header cell, and the note saying so."""
    from envsync.formats import cells, juv

    index = juv.script_cell(nb.data)
    if index is None:
        raise UsageError(f"{nb.path} has no juv `# /// script` cell to remove")
    source = juv.cell_text(nb.data["cells"][index])
    return _guarded(index, source, lambda raw: cells.remove_cell(raw, index)), f"removed the juv `# /// script` cell (cell {index + 1})"


def _guarded(index: int, source: str, splice: Callable[[str], str]) -> Callable[[str], str]:
    """`splice`, refused if the text it gets no longer has that header in that cell."""
    import json

    from envsync.errors import ConcurrentModificationError
    from envsync.formats import juv

    def run(raw: str) -> str:
        data = json.loads(raw)
        if juv.script_cell(data) != index or juv.cell_text(data["cells"][index]) != source:
            raise ConcurrentModificationError("the juv header cell changed while envsync was working; nothing was written")
        return splice(raw)

    return run
