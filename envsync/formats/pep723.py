"""PEP 723 inline script metadata: the `# /// script` block of a script, a marimo notebook
or a juv notebook's cell, read with the specification's reference regex and tomllib."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from typing import Any

from envsync import rules
from envsync.errors import EnvsyncError
from envsync.formats.imported import Imported, check_date

# The reference implementation's regex, from the PEP 723 specification.
REGEX = r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"


def block(text: str, *, where: str) -> dict[str, Any] | None:
    """The `script` block of `text` as TOML data; None without one, an error for two or bad TOML."""
    found = [m for m in re.finditer(REGEX, text) if m.group("type") == "script"]
    if len(found) > 1:
        raise EnvsyncError(f"{where}: more than one `# /// script` block")
    if not found:
        return None
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in found[0].group("content").splitlines(keepends=True)
    )
    try:
        return tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise EnvsyncError(f"{where}: the `# /// script` block is not valid TOML: {exc}") from None


def imported_from(meta: dict[str, Any], *, where: str, kind: str) -> Imported:
    """Dependencies, requires-python and the `[tool.uv]` settings envsync can keep."""
    deps = meta.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise EnvsyncError(f"{where}: `dependencies` in the script block is not a list of strings")
    requires = meta.get("requires-python")
    if requires is not None and not isinstance(requires, str):
        raise EnvsyncError(f"{where}: `requires-python` in the script block is not a string")
    out = Imported(dependencies=list(deps), requires_python=requires, kind=kind)
    uv = meta.get("tool", {}).get("uv", {}) if isinstance(meta.get("tool"), dict) else {}
    if isinstance(uv, dict):
        _take_uv_settings(uv, out, where=where)
    for key in sorted(set(meta) - {"dependencies", "requires-python", "tool"}):
        out.notes.append(f"{where}: `{key}` in the script block is not taken")
    return out


def _take_uv_settings(uv: dict[str, Any], out: Imported, *, where: str) -> None:
    if isinstance(uv.get("exclude-newer"), str):
        out.exclude_newer = check_date(uv["exclude-newer"], where=where)
        out.notes.append(f"{where}: resolving with uv's exclude-newer {out.exclude_newer} (as the script did)")
    tables = [i for i in uv.get("index", []) if isinstance(i, dict)] if isinstance(uv.get("index"), list) else []
    indexes = [i["url"] for i in tables if isinstance(i.get("url"), str)]
    defaults = [i["url"] for i in tables if i.get("default") and isinstance(i.get("url"), str)]
    urls = ([uv["index-url"]] if isinstance(uv.get("index-url"), str) else []) + defaults
    urls += [u for u in indexes if u not in urls]
    more = uv.get("extra-index-url") or []
    extra = urls[1:] + (list(more) if isinstance(more, list) else [more])
    if extra:
        raise EnvsyncError(
            f"{where}: more than one package index is refused on purpose: envsync locks every package from one index",
            hint="keep one index in the file",
        )
    if urls:
        if not rules.is_index_url(urls[0]):
            raise EnvsyncError(f"{where}: index {rules.shown(urls[0])!r} is not an http(s) URL")
        out.index = urls[0]
    for key in sorted(set(uv) - {"exclude-newer", "index", "index-url", "extra-index-url"}):
        out.notes.append(f"{where}: [tool.uv] {key} is not taken")


def render(dependencies: Iterable[str], requires_python: str | None, *, keep: str | None = None) -> str:
    """A `# /// script` block declaring these dependencies (and requires-python).

    With `keep` (the TOML of an existing block), every other table and comment of it stays.
    """
    import tomlkit

    doc = tomlkit.parse(keep) if keep is not None else tomlkit.document()
    if requires_python:
        doc["requires-python"] = requires_python
    arr = tomlkit.array()
    for d in dependencies:
        arr.append(d)
    arr.multiline(True)
    doc["dependencies"] = arr
    body = tomlkit.dumps(doc)
    lines = ["# /// script", *(f"# {ln}" if ln else "#" for ln in body.splitlines()), "# ///"]
    return "\n".join(lines) + "\n"


def declared(meta: dict[str, Any]) -> list[str]:
    """The block's dependencies as written (for comparing with the manifest)."""
    deps = meta.get("dependencies", [])
    return [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
