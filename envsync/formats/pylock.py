"""PEP 751 pylock.toml: write a lock as one (with URLs looked up on its indexes), read one in."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

from packaging.utils import canonicalize_name

from envsync import rules
from envsync.errors import EnvsyncError, LockError
from envsync.formats.files import read_toml
from envsync.lock.model import Lock
from envsync.lock.pylock import pylock_text

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_HASH_FRAGMENT = re.compile(rf"sha256=({rules.SHA256})")


def export_pylock(lock: Lock, *, timeout: float = 30.0) -> str:
    """pylock.toml text with URLs looked up on each package's index (installers need them)."""
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
    return pylock_text(lock, urls=urls)


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


def read_pylock(path: Path) -> tuple[list[str], str | None]:
    """A pylock.toml's packages as exact pins, to be re-locked for the notebook's targets."""
    data = read_toml(path)
    pins = []
    for p in data.get("packages", []):
        pin = f"{p['name']}=={p['version']}"
        if p.get("marker"):
            pin += f" ; {p['marker']}"
        pins.append(pin)
    return pins, data.get("requires-python")
