"""PEP 751 pylock.toml: write a lock as one (with URLs looked up on its indexes), read one in."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

from packaging.utils import canonicalize_name

from envsync import rules
from envsync.errors import EnvsyncError, LockError
from envsync.formats.files import read_toml
from envsync.formats.imported import Imported, pin
from envsync.lock.model import Lock
from envsync.lock.pylock import pylock_document, pylock_text

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_HASH_FRAGMENT = re.compile(rf"sha256=({rules.SHA256})")


def export_pylock(lock: Lock, *, timeout: float = 30.0, dependencies: Iterable[str] | None = None) -> str:
    """pylock.toml text with URLs looked up on each package's index (installers need them).

    With `dependencies`, `[tool.envsync]` also records what was declared, so an import of
    this file declares the same and keeps the lock's fingerprint.
    """
    urls: dict[str, str] = {}
    for p in lock.packages:
        if not p.index:
            raise LockError(f"{p.name} names no index, so its files cannot be located")
        wanted = {a.name: a.sha256 for a in (*p.wheels, *([p.sdist] if p.sdist else []))}
        found = project_files(p.index, p.name, timeout=timeout)
        for fname, sha in wanted.items():
            if fname not in found:
                raise EnvsyncError(f"{fname} is no longer on {p.index}", hint="re-lock with `envsync lock --upgrade-package " + p.name + "`")
            url, listed_sha = found[fname]
            if listed_sha and listed_sha != sha:
                raise EnvsyncError(
                    f"{fname} on {p.index} has a different sha256 than the lock: "
                    "the file was replaced or the lock was tampered with"
                )
            urls[fname] = url
    if dependencies is None:
        return pylock_text(lock, urls=urls)
    import tomlkit

    doc = pylock_document(lock, urls=urls)
    doc["tool"]["envsync"]["dependencies"] = list(dependencies)
    return tomlkit.dumps(doc)


def project_files(index: str, name: str, *, timeout: float) -> dict[str, tuple[str, str | None]]:
    """File name → (absolute URL, sha256 if listed) from a PEP 691 JSON or PEP 503 HTML page."""
    if not rules.is_index_url(index):
        raise EnvsyncError(f"index {index!r} is not an http(s) URL")
    page = f"{index.rstrip('/')}/{canonicalize_name(name)}/"
    req = urllib.request.Request(page, headers={"Accept": f"{SIMPLE_JSON}, text/html;q=0.1"})  # noqa: S310 (scheme checked above)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            base = resp.geturl()
    except (urllib.error.URLError, OSError) as exc:
        raise EnvsyncError(f"cannot reach the package index {index}: {exc}") from None
    out: dict[str, tuple[str, str | None]] = {}
    if SIMPLE_JSON in ctype:
        for f in json.loads(body).get("files", []):
            out[f["filename"]] = (urllib.parse.urljoin(base, f["url"]), f.get("hashes", {}).get("sha256"))
        return out
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    for href in parser.hrefs:
        url, _, frag = urllib.parse.urljoin(base, href).partition("#")
        fname = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        m = _HASH_FRAGMENT.match(frag)
        out[fname] = (url, m.group(1) if m else None)
    return out


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def read_pylock(path: Path) -> Imported:
    """A pylock.toml: what was asked for as dependencies, every locked version as a constraint.

    Declared are the file's own record of them (`[tool.envsync] dependencies`, written by
    `envsync export`), else the packages no other package depends on when the file lists
    dependencies, else every package; the locked versions hold this resolution only.
    """
    data = read_toml(path)
    out = Imported(requires_python=data.get("requires-python"), kind="pylock")
    packages = [p for p in data.get("packages", []) if isinstance(p, dict)]
    pins: list[str] = []
    for p in packages:
        name, version = p.get("name"), p.get("version")
        if not any(k in p for k in ("wheels", "sdist")) and any(k in p for k in ("vcs", "directory", "archive")):
            raise EnvsyncError(f"{path}: {name} comes from a URL, VCS or path: refused on purpose: envsync locks packages from an index")
        pins.append(pin(name, version, p.get("marker"), where=str(path)))
    out.constraints = pins
    indexes = {p["index"] for p in packages if isinstance(p.get("index"), str)}
    if len(indexes) == 1:
        out.index = indexes.pop()
        if not rules.is_index_url(out.index):
            raise EnvsyncError(f"{path}: index {rules.shown(out.index)!r} is not an http(s) URL")
    tool = data.get("tool", {}).get("envsync", {}) if isinstance(data.get("tool"), dict) else {}
    hint = tool.get("dependencies") if isinstance(tool, dict) else None
    if isinstance(hint, list) and all(isinstance(d, str) for d in hint):
        out.dependencies = list(hint)
        out.whole_range = True
        out.notes.append(f"{path}: declared dependencies from its [tool.envsync] table")
        envs = tool.get("environments")
        if isinstance(envs, list) and all(isinstance(e, str) for e in envs):
            out.environments = list(envs)
        return out
    needed = {canonicalize_name(str(d.get("name"))) for p in packages for d in p.get("dependencies", []) if isinstance(d, dict)}
    if any("dependencies" in p for p in packages):
        top = [str(p["name"]) for p in packages if canonicalize_name(p["name"]) not in needed]
        out.dependencies = list(dict.fromkeys(top))
        out.notes.append(f"{path}: declared the {len(out.dependencies)} packages nothing else depends on; the rest follow")
    else:
        out.dependencies = list(dict.fromkeys(str(p["name"]) for p in packages))
        out.notes.append(f"{path}: lists no dependencies between packages: every package is declared (by name)")
    return out
