"""Import from a pyproject.toml: `[project]` dependencies, the extras and dependency groups
asked for, requires-python, the project name, and `[tool.uv]`'s index and exclude-newer."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from envsync.errors import EnvsyncError, UsageError
from envsync.formats.files import read_toml
from envsync.formats.imported import Imported
from envsync.formats.pep723 import imported_from


def read_pyproject(
    path: Path, *, extras: Iterable[str] = (), groups: Iterable[str] = (), all_extras: bool = False
) -> Imported:
    """What the project declares, plus the extras and groups asked for; a note for each left out."""
    data = read_toml(path)
    project = data.get("project", {})
    if not isinstance(project, dict):
        raise EnvsyncError(f"{path}: [project] is not a table")
    tool = data.get("tool", {}) if isinstance(data.get("tool"), dict) else {}
    meta: dict[str, Any] = {"dependencies": project.get("dependencies", [])}
    if "requires-python" in project:
        meta["requires-python"] = project["requires-python"]
    if isinstance(tool.get("uv"), dict):
        meta["tool"] = {"uv": tool["uv"]}
    out = imported_from(meta, where=str(path), kind="pyproject")
    out.notes = [n.replace("the script block", "pyproject.toml") for n in out.notes]
    if isinstance(project.get("name"), str):
        out.project = re.sub(r"[^a-z0-9]+", "-", project["name"].lower()).strip("-")[:64].strip("-") or None
    optional = project.get("optional-dependencies", {}) or {}
    wanted = set(optional) if all_extras else {canonicalize_name(e) for e in extras}
    out.dependencies += _tables(optional, wanted, path, "optional-dependencies", "--extra")
    left = sorted(k for k in optional if canonicalize_name(k) not in wanted and k not in wanted)
    if left:
        out.notes.append(f"{path}: optional dependencies {', '.join(left)} not taken (add --extra NAME or --all-extras)")
    out.dependencies += _groups(data.get("dependency-groups", {}) or {}, {canonicalize_name(g) for g in groups}, path, out)
    for name in sorted(set(data) - {"project", "dependency-groups", "build-system", "tool"}):
        out.notes.append(f"{path}: [{name}] is not taken")
    return out


def _tables(tables: dict[str, Any], wanted: set[str], path: Path, label: str, flag: str) -> list[str]:
    by_key = {canonicalize_name(k): k for k in tables}
    missing = sorted(wanted - set(by_key) - set(tables))
    if missing:
        raise UsageError(f"{path} has no {label} entry {missing[0]!r}", hint="it has: " + (", ".join(sorted(tables)) or "none"))
    out: list[str] = []
    for key, name in sorted(by_key.items()):
        if key in wanted or name in wanted:
            items = tables[name]
            if not isinstance(items, list):
                raise EnvsyncError(f"{path}: [{label}] {name} is not a list")
            out += [i for i in items if isinstance(i, str)]
    return out


def _groups(groups: dict[str, Any], wanted: set[str], path: Path, imported: Imported) -> list[str]:
    by_key: dict[str, str] = {canonicalize_name(k): k for k in groups}
    if wanted - set(by_key):
        raise UsageError(
            f"{path} has no dependency group {sorted(wanted - set(by_key))[0]!r}",
            hint="it has: " + (", ".join(sorted(groups)) or "none"),
        )
    out: list[str] = []
    seen: set[str] = set()

    def take(key: str) -> None:
        if key in seen:
            return
        seen.add(key)
        for item in groups[by_key[key]]:
            if isinstance(item, dict) and isinstance(item.get("include-group"), str):
                take(canonicalize_name(item["include-group"]))
            elif isinstance(item, str):
                out.append(item)

    for key in sorted(wanted):
        take(key)
    left = sorted(set(by_key) - seen)
    if left:
        imported.notes.append(f"{path}: dependency group(s) {', '.join(left)} not taken (add --group NAME)")
    return out
