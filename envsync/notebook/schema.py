"""The manifest's JSON schema: where it ships, and the check of raw `metadata.envsync` data against it.

Importing jsonschema and building its validator costs a short command more than its own
work; `envsync.notebook.accepted` is how a manifest accepted before skips it.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from envsync.errors import ManifestError

MANIFEST_VERSION = 1
SCHEMA_NAME = f"envsync-manifest-v{MANIFEST_VERSION}.schema.json"


def schema_path() -> Path:
    """The schema ships inside the package; a source checkout keeps it in schemas/."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "schemas" / SCHEMA_NAME, here.parent / "schemas" / SCHEMA_NAME):
        if candidate.exists():
            return candidate
    raise ManifestError(f"envsync is installed without its schema {SCHEMA_NAME}")


@lru_cache(maxsize=1)
def schema_bytes() -> bytes:
    return schema_path().read_bytes()


@lru_cache(maxsize=1)
def _validator() -> Any:
    # jsonschema pulls rfc3987_syntax (~0.7 s to import) only for format checks we never use.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import jsonschema  # type: ignore[import-untyped]

    return jsonschema.Draft202012Validator(json.loads(schema_bytes()))


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
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "metadata.envsync" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path
        )
        raise ManifestError(f"{where}: {_short(err.message)}", hint="see schemas/" + SCHEMA_NAME)


def _short(message: str) -> str:
    return message if len(message) <= 160 else message[:157] + "..."
