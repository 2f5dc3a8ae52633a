"""Notebooks and scripts that carry PEP 723 metadata: juv notebooks (a `# /// script` code
cell, and juv's own uv.lock in `metadata["uv.lock"]`), marimo notebooks (`.py`, or exported
`.ipynb` with the block in `metadata.marimo.header`) and plain PEP 723 scripts."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from envsync.errors import EnvsyncError
from envsync.formats import pep723
from envsync.formats.files import read_text
from envsync.formats.imported import Imported, check_date, pin


def cell_text(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def script_cell(data: Mapping[str, Any]) -> int | None:
    """Index of the first code cell holding a `# /// script` block (juv puts it first)."""
    for i, cell in enumerate(data.get("cells", [])):
        if isinstance(cell, Mapping) and cell.get("cell_type") == "code" and "# /// script" in cell_text(cell):
            if pep723.block(cell_text(cell), where=f"cell {i + 1}") is not None:
                return i
    return None


def _marimo_header(data: Mapping[str, Any]) -> str | None:
    marimo = data.get("metadata", {}).get("marimo")
    header = marimo.get("header") if isinstance(marimo, Mapping) else None
    if isinstance(header, Mapping):
        header = header.get("value")
    return header if isinstance(header, str) else None


def header_meta(data: Mapping[str, Any], where: str) -> tuple[dict[str, Any], str] | None:
    """The notebook's PEP 723 block as data, and which tool wrote it ('juv' or 'marimo')."""
    i = script_cell(data)
    if i is not None:
        meta = pep723.block(cell_text(data["cells"][i]), where=f"{where} cell {i + 1}")
        assert meta is not None
        return meta, "juv"
    header = _marimo_header(data)
    if header is not None:
        meta = pep723.block(header, where=f"{where} metadata.marimo.header")
        if meta is not None:
            return meta, "marimo"
    return None


def read_notebook_source(data: Mapping[str, Any], where: str) -> Imported | None:
    """What a juv or marimo-exported notebook declares, with juv's locked versions as pins."""
    found = header_meta(data, where)
    if found is None:
        return None
    meta, kind = found
    out = pep723.imported_from(meta, where=where, kind=kind)
    lock_text = data.get("metadata", {}).get("uv.lock")
    if isinstance(lock_text, str):
        _take_uv_lock(lock_text, out, where=f"{where} metadata.uv.lock")
    elif kind == "juv":
        out.notes.append(f"{where}: juv has not locked this notebook (no metadata.uv.lock): resolving afresh")
    return out


def _take_uv_lock(text: str, out: Imported, *, where: str) -> None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EnvsyncError(f"{where} is not valid TOML: {exc}") from None
    entries: dict[str, list[dict[str, Any]]] = {}
    for p in data.get("package", []):
        source = p.get("source", {}) if isinstance(p, dict) else {}
        if isinstance(source, dict) and "registry" in source and isinstance(p.get("version"), str):
            entries.setdefault(canonicalize_name(str(p.get("name"))), []).append(p)
    skipped = []
    for name, found in sorted(entries.items()):
        if len(found) == 1:
            out.constraints.append(pin(name, found[0]["version"], where=where))
            continue
        # uv locked this package at one version per fork: each version holds where its fork does.
        markers = [p.get("resolution-markers") for p in found]
        if not all(isinstance(m, list) and m and all(isinstance(x, str) for x in m) for m in markers):
            skipped.append(name)
            continue
        for p in found:
            ms: list[str] = p["resolution-markers"]
            out.constraints.append(pin(name, p["version"], " or ".join(f"({m})" for m in ms), where=where))
    out.notes.append(f"{where}: keeping juv's locked versions of {len(entries) - len(skipped)} packages")
    if skipped:
        out.notes.append(f"{where}: {', '.join(skipped)} locked at several versions without markers: resolved afresh")
    options = data.get("options", {})
    newer = options.get("exclude-newer") if isinstance(options, dict) else None
    if isinstance(newer, str) and not out.exclude_newer:
        out.exclude_newer = check_date(newer, where=where)
        out.notes.append(f"{where}: resolving with juv's exclude-newer {newer}")


def read_script(path: Path) -> Imported:
    """A PEP 723 script or a marimo notebook (`.py`): its `# /// script` block."""
    text = read_text(path)
    meta = pep723.block(text, where=str(path))
    if meta is None:
        raise EnvsyncError(f"{path} has no `# /// script` block to import", hint="PEP 723 describes the block")
    kind = "marimo" if "import marimo" in text and "marimo.App(" in text else "pep723"
    return pep723.imported_from(meta, where=str(path), kind=kind)


def header_with(cell_source: str, dependencies: list[str], requires_python: str | None = None) -> str:
    """A juv cell's source with its block's dependencies (and requires-python) replaced, the rest kept."""
    import re

    match = next(m for m in re.finditer(pep723.REGEX, cell_source) if m.group("type") == "script")
    content = "".join(
        ln[2:] if ln.startswith("# ") else ln[1:] for ln in match.group("content").splitlines(keepends=True)
    )
    block = pep723.render(dependencies, requires_python, keep=content).rstrip("\n")
    return cell_source[: match.start()] + block + cell_source[match.end() :]


def edited_requirements(current: Sequence[str], *, added: Sequence[str] = (), removed: Sequence[str] = ()) -> list[str]:
    """The header's list after the manifest's own edit: an added name replaces its entry, a removed one goes."""
    from packaging.requirements import InvalidRequirement, Requirement

    def key(text: str) -> str:
        try:
            return canonicalize_name(Requirement(text).name)
        except InvalidRequirement:
            return text

    new = {key(a): a for a in added}
    gone = {canonicalize_name(n) for n in removed}
    kept = [new.pop(key(d), d) for d in current if key(d) not in gone]
    return kept + list(new.values())
