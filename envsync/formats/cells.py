"""One cell's source in an .ipynb's text, replaced or removed in place: every other byte kept.

juv keeps its `# /// script` block in a code cell; keeping that cell in step with the
manifest must not re-serialise the notebook, so the edit is spliced into the text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]

from envsync.errors import NotebookError

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    key: str = ""
    key_start: int = 0


def _skip(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _members(s: str, start: int) -> list[_Span]:
    if s[start] != "{":
        raise NotebookError("a cell is not a JSON object")
    out: list[_Span] = []
    i = _skip(s, start + 1)
    while s[i] != "}":
        key_start = i
        key, i = scanstring(s, i + 1)
        i = _skip(s, _skip(s, i) + 1)
        _, end = _DECODER.raw_decode(s, i)
        out.append(_Span(i, end, key, key_start))
        i = _skip(s, end)
        if s[i] == ",":
            i = _skip(s, i + 1)
    return out


def _items(s: str, start: int) -> list[_Span]:
    if s[start] != "[":
        raise NotebookError("the notebook's 'cells' is not a JSON array")
    out: list[_Span] = []
    i = _skip(s, start + 1)
    while s[i] != "]":
        _, end = _DECODER.raw_decode(s, i)
        out.append(_Span(i, end))
        i = _skip(s, end)
        if s[i] == ",":
            i = _skip(s, i + 1)
    return out


def _cells(raw: str) -> tuple[_Span, list[_Span]]:
    top = _members(raw, _skip(raw, 0))
    cells = [m for m in top if m.key == "cells"]
    if len(cells) != 1:
        raise NotebookError("the notebook has no single 'cells' array")
    return cells[0], _items(raw, cells[0].start)


def _indent_of(s: str, pos: int) -> str:
    line = s.rfind("\n", 0, pos)
    return s[line + 1 : pos] if line != -1 else ""


def _render(s: str, old: _Span, text: str, key_start: int) -> str:
    if s[old.start] == '"':
        return json.dumps(text, ensure_ascii=False)
    lines = text.splitlines(keepends=True)
    inner = _items(s, old.start)
    if not inner or "\n" not in s[old.start : inner[0].start]:
        return json.dumps(lines, ensure_ascii=False, separators=(", ", ": ") if " " in s[old.start : old.end] else (",", ":"))
    indent = _indent_of(s, inner[0].start)
    body = ",\n".join(indent + json.dumps(line, ensure_ascii=False) for line in lines)
    return "[\n" + body + "\n" + _indent_of(s, key_start) + "]"


def replace_source(raw: str, index: int, text: str) -> str:
    """`raw` with cells[index].source set to `text`, laid out as the notebook lays sources out."""
    _, items = _cells(raw)
    source = [m for m in _members(raw, items[index].start) if m.key == "source"]
    if len(source) != 1:
        raise NotebookError(f"cell {index + 1} has no single 'source'")
    span = source[0]
    return raw[: span.start] + _render(raw, span, text, span.key_start) + raw[span.end :]


def remove_cell(raw: str, index: int) -> str:
    """`raw` without cells[index]."""
    array, items = _cells(raw)
    if len(items) == 1:
        return raw[: array.start + 1] + raw[_skip(raw, items[0].end) :]
    if index + 1 < len(items):
        return raw[: items[index].start] + raw[items[index + 1].start :]
    return raw[: items[index - 1].end] + raw[items[index].end :]


def insert_first(raw: str, cell: Mapping[str, object]) -> str:
    """`raw` with `cell` as the first cell, laid out as the notebook lays out its cells."""
    array, items = _cells(raw)
    if not items:
        return raw[: array.start + 1] + json.dumps(cell, ensure_ascii=False, sort_keys=True) + raw[array.start + 1 :]
    first = items[0].start
    between = raw[array.start + 1 : first]
    if "\n" not in between:
        return raw[:first] + json.dumps(cell, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "," + raw[first:]
    indent = _indent_of(raw, first)
    unit = indent[len(_indent_of(raw, array.key_start)) :] or " "
    text = json.dumps(cell, ensure_ascii=False, sort_keys=True, indent=unit).replace("\n", "\n" + indent)
    return raw[:first] + text + ",\n" + indent + raw[first:]
