"""A Lock written as a PEP 751 pylock.toml document (the lock's own data model, in TOML)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envsync.lock.model import LOCK_VERSION, Lock


def pylock_document(lock: Lock, *, urls: Mapping[str, str] | None) -> Any:
    """The lock as a PEP 751 TOML document; with `urls`, every artifact gets its URL."""
    import tomlkit

    doc = tomlkit.document()
    doc["lock-version"] = LOCK_VERSION
    doc["created-by"] = lock.created_by
    doc["requires-python"] = lock.requires_python
    pkgs = tomlkit.aot()
    for p in lock.packages:
        t = tomlkit.table()
        t["name"] = p.name
        t["version"] = p.version
        if p.marker:
            t["marker"] = p.marker
        if p.requires_python:
            t["requires-python"] = p.requires_python
        if p.index:
            t["index"] = p.index
        if p.sdist:
            t["sdist"] = _artifact_table(p.sdist.name, p.sdist.sha256, urls)
        if p.wheels:
            arr = tomlkit.array()
            arr.multiline(True)
            for w in p.wheels:
                arr.append(_artifact_table(w.name, w.sha256, urls))
            t["wheels"] = arr
        pkgs.append(t)
    doc["packages"] = pkgs
    tool = tomlkit.table()
    env = tomlkit.table()
    env["inputs"] = lock.inputs
    env["fingerprint"] = lock.fingerprint
    env["environments"] = list(lock.environments)
    tool["envsync"] = env
    doc["tool"] = tool
    return doc


def pylock_text(lock: Lock, *, urls: Mapping[str, str] | None = None) -> str:
    """`pylock_document` as text."""
    import tomlkit

    return tomlkit.dumps(pylock_document(lock, urls=urls))


def _artifact_table(name: str, sha256: str, urls: Mapping[str, str] | None) -> Any:
    import tomlkit

    t = tomlkit.inline_table()
    t["name"] = name
    if urls is not None:
        t["url"] = urls[name]
    t["hashes"] = {"sha256": sha256}
    return t
