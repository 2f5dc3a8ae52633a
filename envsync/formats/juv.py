"""Import from a juv notebook: the PEP 723 `# /// script` block in one of its code cells."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

_SCRIPT_BLOCK = re.compile(r"^# /// script\s*$(.*?)^# ///\s*$", re.M | re.S)


def read_juv_notebook(data: Mapping[str, Any]) -> tuple[list[str], str | None] | None:
    """Dependencies from a juv notebook's PEP 723 `# /// script` cell, if it has one."""
    for cell in data.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        text = "".join(src) if isinstance(src, list) else str(src)
        m = _SCRIPT_BLOCK.search(text)
        if not m:
            continue
        body = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in m.group(1).strip("\n").splitlines())
        meta = tomllib.loads(body)
        return list(meta.get("dependencies", [])), meta.get("requires-python")
    return None
