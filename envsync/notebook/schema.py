"""The manifest's JSON schema: where it ships, and the check of raw `metadata.envsync` data against it.

Importing jsonschema and building its validator is most of a short command's run (about
0.15-0.3 s against 0.05 s for `envsync --help`), while a notebook's manifest rarely
changes between commands. So a command may name a folder (`remember_valid_in`) where
the sha256 of each manifest the schema accepted is kept, together with the schema's own
bytes: the same content is accepted again without jsonschema. Only acceptances are
kept, so every refusal still comes from the schema, word for word.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from envsync.errors import ManifestError

MANIFEST_VERSION = 1
SCHEMA_NAME = f"envsync-manifest-v{MANIFEST_VERSION}.schema.json"

# How many accepted manifests the folder remembers (one line each, newest last).
REMEMBERED = 256
VALID_FILE = "valid-manifests.txt"

_remember_dir: Callable[[], Path] | None = None


def schema_path() -> Path:
    """The schema ships inside the package; a source checkout keeps it in schemas/."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "schemas" / SCHEMA_NAME, here.parent / "schemas" / SCHEMA_NAME):
        if candidate.exists():
            return candidate
    raise ManifestError(f"envsync is installed without its schema {SCHEMA_NAME}")


@lru_cache(maxsize=1)
def _schema_bytes() -> bytes:
    return schema_path().read_bytes()


@lru_cache(maxsize=1)
def _validator() -> Any:
    # jsonschema pulls rfc3987_syntax (~0.7 s to import) only for format checks we never use.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import jsonschema  # type: ignore[import-untyped]

    return jsonschema.Draft202012Validator(json.loads(_schema_bytes()))


def remember_valid_in(folder: Callable[[], Path] | None) -> None:
    """Keep accepted manifests' hashes in the folder `folder()` names (None: validate every time)."""
    global _remember_dir
    _remember_dir = folder


def _content_key(data: dict[str, Any]) -> str | None:
    """sha256 of the schema and of `data` as canonical JSON; None when it has no such form."""
    try:
        text = json.dumps(data, sort_keys=True, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return None
    digest = hashlib.sha256(_schema_bytes())
    digest.update(b"\0" + text.encode("ascii"))
    return digest.hexdigest()


def _remembered(folder: Path) -> list[str]:
    try:
        return (folder / VALID_FILE).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []


def _remember(folder: Path, key: str) -> None:
    from envsync.fsutil import atomic_write_bytes

    keys = [k for k in _remembered(folder) if k != key][-(REMEMBERED - 1) :] + [key]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / VALID_FILE, ("\n".join(keys) + "\n").encode("ascii"))
    except OSError:
        pass  # remembering only saves time; a read-only home validates every time


def validate_data(data: Any) -> None:
    """Check raw manifest data against the schema, refusing newer versions by name."""
    if not isinstance(data, dict):
        raise ManifestError(f"metadata.envsync must be an object, found {type(data).__name__}")
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        raise ManifestError(
            f"manifest version {version} is newer than this envsync understands "
            f"(up to {MANIFEST_VERSION})",
            hint="upgrade envsync: `uv tool upgrade envsync` or `pip install -U envsync`",
        )
    folder = _remember_dir() if _remember_dir is not None else None
    key = _content_key(data) if folder is not None else None
    if folder is not None and key is not None and key in _remembered(folder):
        return
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "metadata.envsync" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path
        )
        raise ManifestError(f"{where}: {_short(err.message)}", hint="see schemas/" + SCHEMA_NAME)
    if folder is not None and key is not None:
        _remember(folder, key)


def _short(message: str) -> str:
    return message if len(message) <= 160 else message[:157] + "..."
