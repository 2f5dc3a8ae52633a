"""Manifests this machine accepted before, kept by content with what reading them computed.

Reading a manifest checks it against the JSON schema (jsonschema) and parses every
requirement, marker, version and Python range in it (packaging). Importing the two is
most of a short command's run, while a notebook's manifest rarely changes between
commands. So a command may name a folder (`remember_in`) where each accepted manifest
is kept under one sha256 of its canonical JSON, of the schema's bytes and of the code
that checked it, together with the two things the checks computed: the dependencies as
normalized, and the lock-inputs digest. The same content read by the same code is
accepted again without either library.

Only acceptances are kept, so every refusal still comes from the checks themselves,
word for word, and what one command refuses every command refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# How many accepted manifests the folder remembers (one line each, newest last).
REMEMBERED = 256
ACCEPTED_FILE = "accepted-manifests-v1.txt"

# The modules whose rules decide whether a manifest is accepted and what reading it
# computes; a change to any of them (an upgrade, an edit of a source checkout) forgets
# every acceptance.
RULE_MODULES = (
    "envsync",
    "envsync.rules",
    "envsync.settings",
    "envsync.notebook.schema",
    "envsync.notebook.manifest",
    "envsync.lock.model",
    "envsync.lock.targets",
    "packaging",
)

_remember_dir: Callable[[], Path] | None = None


@dataclass(frozen=True)
class Accepted:
    """What reading an accepted manifest computed."""

    dependencies: tuple[str, ...]  # as normalized by packaging
    inputs: str  # the lock-inputs digest of the manifest


def remember_in(folder: Callable[[], Path] | None) -> None:
    """Keep acceptances in the folder `folder()` names (None: check every manifest in full)."""
    global _remember_dir
    _remember_dir = folder


def _code_stamp() -> bytes:
    parts = []
    for name in RULE_MODULES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if module is None or path is None:
            __import__(name)
            path = sys.modules[name].__file__
        st = os.stat(str(path))
        parts.append(f"{name}:{getattr(sys.modules[name], '__version__', '')}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts).encode()


def content_key(data: Any) -> str | None:
    """sha256 of the checking code, the schema and `data` as canonical JSON; None without a form."""
    from envsync.notebook.schema import schema_bytes

    try:
        text = json.dumps(data, sort_keys=True, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return None
    digest = hashlib.sha256(_code_stamp())
    digest.update(b"\0" + schema_bytes() + b"\0" + text.encode("ascii"))
    return digest.hexdigest()


def _lines(folder: Path) -> list[str]:
    try:
        return (folder / ACCEPTED_FILE).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def recall(data: Any) -> tuple[str | None, Accepted | None]:
    """The content key of `data` (None when nothing is remembered) and what it was accepted with."""
    folder = _remember_dir() if _remember_dir is not None else None
    key = content_key(data) if folder is not None else None
    if folder is None or key is None:
        return None, None
    for line in reversed(_lines(folder)):
        if line.startswith(key + "\t"):
            try:
                _key, inputs, deps = line.split("\t", 2)
                found = json.loads(deps)
            except ValueError:
                return key, None
            if isinstance(found, list) and all(isinstance(d, str) for d in found):
                return key, Accepted(tuple(found), inputs)
            return key, None
    return key, None


def keep(key: str | None, accepted: Accepted) -> None:
    """Remember that the content keyed `key` was accepted, with what reading it computed."""
    folder = _remember_dir() if _remember_dir is not None else None
    if folder is None or key is None:
        return
    from envsync.fsutil import atomic_write_bytes

    line = f"{key}\t{accepted.inputs}\t{json.dumps(list(accepted.dependencies), ensure_ascii=True)}"
    kept = [k for k in _lines(folder) if not k.startswith(key + "\t")][-(REMEMBERED - 1) :] + [line]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / ACCEPTED_FILE, ("\n".join(kept) + "\n").encode("ascii"))
    except OSError:
        pass  # remembering only saves time; a read-only home checks every time
