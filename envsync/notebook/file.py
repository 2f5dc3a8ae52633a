"""Read an .ipynb file and write back only `metadata.envsync`, atomically, every other byte kept.

The write splices the new value into the original text instead of re-serialising the
whole notebook, so cells, outputs, ids, key order, indentation and unknown keys stay
exactly as the editor that saved the file wrote them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from envsync.errors import ConcurrentModificationError, NotebookError
from envsync.fsutil import atomic_write_bytes
from envsync.notebook import jsontext, writelock

KEY = "envsync"
_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


@dataclass(frozen=True)
class NotebookFile:
    """A notebook as read: its real path, exact bytes and parsed content."""

    path: Path
    raw: bytes
    data: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.data.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def manifest_data(self) -> Any:
        return self.metadata.get(KEY)


def read_notebook(path: Path) -> NotebookFile:
    """Read and check an nbformat 4 notebook; every failure is one clear NotebookError."""
    shown = str(path)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise NotebookError(f"{shown} is a directory, not a notebook")
        if not stat.S_ISREG(st.st_mode):
            # A FIFO would block forever and /dev/zero would never end.
            raise NotebookError(f"{shown} is not a regular file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotebookError(
            f"{shown}: no such file", hint="`envsync init` creates a notebook with a manifest"
        ) from None
    except OSError as exc:
        raise NotebookError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotebookError(f"{shown} is not UTF-8 text, so not a notebook") from None
    data = jsontext.loads(text, shown)
    check_structure(data, shown)
    return NotebookFile(path=path, raw=raw, data=data)


def check_structure(data: Any, shown: str) -> None:
    if not isinstance(data, dict) or "cells" not in data:
        raise NotebookError(f"{shown} is JSON but not a Jupyter notebook (no 'cells')")
    major = data.get("nbformat")
    if major != 4:
        raise NotebookError(
            f"{shown} is nbformat {major}, envsync needs nbformat 4",
            hint="open and save it in Jupyter, or `jupyter nbconvert --to notebook`, to upgrade it",
        )
    if not isinstance(data["cells"], list):
        raise NotebookError(f"{shown}: 'cells' is not a list")
    if not isinstance(data.get("metadata", {}), dict):
        raise NotebookError(f"{shown}: 'metadata' is not an object")


def new_notebook_bytes(kernel_name: str, display_name: str) -> bytes:
    """An empty nbformat 4.5 notebook, serialised the way Jupyter saves one."""
    nb = {
        "cells": [],
        "metadata": {
            "kernelspec": {"display_name": display_name, "language": "python", "name": kernel_name},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def create_notebook(path: Path, content: bytes) -> None:
    """Create a new notebook file; refuse to replace one that appeared meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConcurrentModificationError(f"{path} appeared while envsync was creating it") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def render_value(value: Any, *, indent: str, unit: str | None) -> str:
    """Serialise `value` to sit at a member position whose key is indented by `indent`."""
    # Keys sorted as Jupyter sorts them on save, so a later save by Jupyter changes nothing.
    if unit is None:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    text = json.dumps(value, ensure_ascii=False, indent=unit, sort_keys=True)
    return text.replace("\n", "\n" + indent)


def splice_manifest(raw: str, value: Any | None) -> str:
    """Return `raw` with metadata.envsync set to `value` (None removes it); nothing else changes."""
    top_open = _skip_ws(raw, 0)
    if raw[top_open : top_open + 1] != "{":
        raise NotebookError("notebook does not start with a JSON object")
    members = _members(raw, top_open)
    if sum(m.key == "metadata" for m in members) > 1:
        # JSON readers keep the last one; writing the first would silently lose the change.
        raise NotebookError("the notebook has two top-level 'metadata' keys; refusing to guess which one counts")
    meta = next((m for m in members if m.key == "metadata"), None)
    if meta is None:
        raise NotebookError("notebook has no 'metadata' object to hold the manifest")
    inner = _members(raw, meta.value_start)
    if sum(m.key == KEY for m in inner) > 1:
        raise NotebookError(f"the notebook's metadata has two '{KEY}' keys; refusing to guess which one counts")
    current = next((m for m in inner if m.key == KEY), None)
    indent, unit = _layout(raw, meta, inner)
    if current is not None:
        if value is None:
            return _remove_member(raw, meta.value_start, inner, current)
        return raw[: current.value_start] + render_value(value, indent=indent, unit=unit) + raw[current.value_end :]
    if value is None:
        return raw
    rendered = f'"{KEY}": ' + render_value(value, indent=indent, unit=unit)
    if unit is None:
        rendered = f'"{KEY}":' + render_value(value, indent=indent, unit=None)
    # Jupyter sorts metadata keys; insert where it would, so its next save changes nothing.
    after = [m for m in inner if m.key > KEY]
    if after:
        pos = after[0].key_start
        sep = "," + (("\n" + indent) if unit is not None else "")
        return raw[:pos] + rendered + sep + raw[pos:]
    if inner:
        last = inner[-1]
        sep = "," + (("\n" + indent) if unit is not None else "")
        return raw[: last.value_end] + sep + rendered + raw[last.value_end :]
    # Empty metadata object: `{}` becomes `{ <member> }` laid out like its parent.
    open_at = meta.value_start
    close_at = _skip_ws(raw, open_at + 1)
    if unit is None:
        return raw[: open_at + 1] + rendered + raw[close_at:]
    parent_indent = indent[: len(indent) - len(unit)]
    return raw[: open_at + 1] + "\n" + indent + rendered + "\n" + parent_indent + raw[close_at:]


@dataclass(frozen=True)
class _Member:
    key: str
    key_start: int
    value_start: int
    value_end: int


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _members(s: str, obj_start: int) -> list[_Member]:
    """Key and value spans of the members of the JSON object starting at `obj_start`."""
    if s[obj_start] != "{":
        raise NotebookError("'metadata' is not a JSON object")
    out: list[_Member] = []
    i = _skip_ws(s, obj_start + 1)
    if s[i] == "}":
        return out
    while True:
        key_start = i
        key, i = scanstring(s, i + 1)
        i = _skip_ws(s, i)
        i = _skip_ws(s, i + 1)  # the colon
        _, end = _DECODER.raw_decode(s, i)
        out.append(_Member(key, key_start, i, end))
        i = _skip_ws(s, end)
        if s[i] == ",":
            i = _skip_ws(s, i + 1)
            continue
        return out


def _layout(s: str, meta: _Member, inner: list[_Member]) -> tuple[str, str | None]:
    """The indentation of metadata's members and one indent unit; unit None means compact."""
    if inner:
        line_start = s.rfind("\n", 0, inner[0].key_start)
        if line_start == -1 or line_start < meta.value_start:
            return "", None
        indent = s[line_start + 1 : inner[0].key_start]
    else:
        line_start = s.rfind("\n", 0, meta.key_start)
        if line_start == -1:
            return "", None
        parent = s[line_start + 1 : meta.key_start]
        indent = parent * 2 if parent else " "
    parent_line = s.rfind("\n", 0, meta.key_start)
    parent_indent = s[parent_line + 1 : meta.key_start] if parent_line != -1 else ""
    unit = indent[len(parent_indent) :] or " "
    return indent, unit


def _remove_member(s: str, obj_start: int, inner: list[_Member], member: _Member) -> str:
    idx = inner.index(member)
    if len(inner) == 1:
        close = _skip_ws(s, member.value_end)
        return s[: obj_start + 1] + s[close:]
    if idx + 1 < len(inner):
        return s[: member.key_start] + s[inner[idx + 1].key_start :]
    prev = inner[idx - 1]
    return s[: prev.value_end] + s[member.value_end :]


def write_manifest(nb: NotebookFile, value: Any | None, *, edit: Callable[[str], str] | None = None) -> NotebookFile:
    """Write `value` as metadata.envsync into the notebook file, atomically.

    Refuses, without writing, if the file changed on disk since `nb` was read. The new
    file keeps the owner, group and mode of the one it replaces. `edit` is one more
    splice of the text in the same write (the juv header cell kept in step).
    """
    target = nb.path.resolve()
    st = _stat_for_write(nb.path, target)
    raw = nb.raw.decode("utf-8")
    text = splice_manifest(edit(raw) if edit else raw, value)
    new_raw = text.encode("utf-8")
    # Parse what we are about to write: never leave a notebook that does not load.
    new_data = jsontext.loads(text, str(nb.path))
    with writelock.held(target, str(nb.path)):
        if target.read_bytes() != nb.raw:
            raise ConcurrentModificationError(
                f"{nb.path} changed on disk while envsync was working; nothing was written",
                hint="run the command again",
            )
        st = _stat_for_write(nb.path, target)
        try:
            atomic_write_bytes(target, new_raw, like=st)
        except PermissionError as exc:
            raise NotebookError(
                f"cannot rewrite {nb.path} with its owner (uid {st.st_uid}, gid {st.st_gid}) and mode "
                f"{stat.S_IMODE(st.st_mode):04o}: {exc.strerror}; nothing was written"
            ) from None
        # Every envsync writer holds this lock, so a temp file of ours still here is
        # what a killed writer left: remove it rather than leave a notebook-sized file.
        import glob

        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
    return NotebookFile(path=nb.path, raw=new_raw, data=new_data)


def _stat_for_write(shown: Path, target: Path) -> os.stat_result:
    """The notebook's stat, once it is known that a rewrite can keep its owner and group."""
    try:
        st = target.stat()
    except FileNotFoundError:
        raise ConcurrentModificationError(f"{shown} was removed while envsync worked on it") from None
    if not os.access(target, os.W_OK):
        raise NotebookError(f"{shown} is read-only", hint="make it writable, or copy it first")
    if not os.access(target.parent, os.W_OK):
        raise NotebookError(f"cannot write into {target.parent}: the folder is read-only")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        # The rewrite is a new file: only root can give it another user's name or a group
        # this user is not in, and silently taking the notebook over is not ours to do.
        if st.st_uid != os.geteuid():
            raise NotebookError(
                f"{shown} belongs to another user (uid {st.st_uid}); rewriting it would make it yours",
                hint="ask its owner to run the command, or work on a copy",
            )
        if st.st_gid != os.getegid() and st.st_gid not in os.getgroups():
            raise NotebookError(
                f"{shown} belongs to group {st.st_gid}, which you are not in; rewriting it would change its group",
                hint="ask its owner to run the command, or work on a copy",
            )
    return st
