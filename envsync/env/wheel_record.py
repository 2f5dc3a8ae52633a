"""A wheel's RECORD as installed: the hashed files it lists, and how it spells a sha256.

Each row is `path,sha256=<urlsafe base64, no padding>,size`, as CSV (PEP 376, PEP 627).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable
from pathlib import Path


def record_hash(data_digest: bytes) -> str:
    """RECORD's spelling of a sha256 digest."""
    return "sha256=" + base64.urlsafe_b64encode(data_digest).rstrip(b"=").decode()


def read_record(env: Path, dist_info: Path) -> list[tuple[str, str, int | None]]:
    """(path relative to the env, RECORD hash, RECORD size) of each hashed file RECORD lists.

    Entries without a sha256, byte code and paths that leave the env are left out.
    """
    try:
        text = (dist_info / "RECORD").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    root = os.path.normpath(env)
    site = os.path.dirname(os.path.normpath(dist_info))
    # Most rows name a file below site-packages: joined as text, without normpath and
    # relpath for each of them (a quarter of a second for a 12,000-file env).
    prefix = os.path.relpath(site, root).replace(os.sep, "/") + "/"
    out = []
    for row in _rows(text):
        if len(row) < 2 or not row[1].startswith("sha256=") or row[0].endswith(".pyc"):
            continue
        name = row[0]
        probe = f"/{name}/"
        if "\\" in name or "//" in probe or "/./" in probe or "/../" in probe:
            full = os.path.normpath(os.path.join(site, name))
            rel = os.path.relpath(full, root)
            if rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
                continue
            rel = rel.replace(os.sep, "/")
        else:
            rel = prefix + name
        size = int(row[2]) if len(row) > 2 and row[2].isdigit() else None
        out.append((rel, row[1], size))
    return out


def _rows(text: str) -> Iterable[list[str]]:
    """RECORD's CSV rows; split by hand when nothing in it needs the csv module (quotes, CR, NUL)."""
    if '"' in text or "\r" in text or "\0" in text:
        import csv

        return csv.reader(io.StringIO(text))
    return (line.split(",") for line in text.split("\n"))
