"""Parse a notebook's text as JSON: every file Python's reader refuses is one NotebookError.

Odd values inside cells (NaN, 1e999, a key twice in an output) are read as Jupyter reads
them, so every command agrees with the editor. What envsync acts on is held to more:
the top level, `metadata` and `metadata.envsync` may not repeat a key (a reader and a
reviewer would see different values) and the manifest may not nest deeper than a manifest
can. Text that is not Unicode (a lone surrogate escape) is refused anywhere, since no
UTF-8 writer, Jupyter's included, can save it again.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from envsync.errors import NotebookError

KEY = "envsync"
# Real notebooks nest a few dozen levels at most. A fixed limit, far below what the
# parser's recursion allows, makes "too deep" the same answer at every call depth, so
# what one command reads every command (and the write that re-parses) reads too.
MAX_DEPTH = 256
# A valid manifest nests about six levels deep; far below anything that strains a validator.
MAX_MANIFEST_DEPTH = 32
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class _TooManyDigits(Exception):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _TooManyDigits(len(text.lstrip("-"))) from None


def loads(text: str, shown: str) -> Any:
    """The JSON value of a notebook's text; NotebookError naming `shown` and the reason."""
    repeated: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            twice: set[str] = set()
            for key, _ in pairs:
                (twice if key in seen else seen).add(key)
            # The object itself is kept so that its id cannot be reused by another one.
            repeated[id(obj)] = (obj, sorted(twice))
        return obj

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook, parse_int=_int)
    except _TooManyDigits as exc:
        limit = sys.get_int_max_str_digits()
        raise NotebookError(
            f"{shown} holds an integer of {exc.digits:,} digits; Python (and so Jupyter) "
            f"reads at most {limit:,}"
        ) from None
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{shown} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise NotebookError(f"{shown} is nested too deeply to be a notebook") from None
    except ValueError as exc:
        raise NotebookError(f"{shown} cannot be read as JSON: {exc}") from None
    if _deeper_than(data, MAX_DEPTH):
        raise NotebookError(f"{shown} is nested too deeply to be a notebook (more than {MAX_DEPTH} levels)")
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(data, shown)
    if isinstance(data, dict):
        _check_repeats(data, repeated, shown)
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    # Iterative, exact types only (the parser makes no subclasses): this walks every
    # container of a notebook that may be hundreds of megabytes.
    if type(data) is not dict and type(data) is not list:
        return False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if type(value) is dict else value
        stack.extend((c, depth + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def _check_unicode(data: Any, shown: str) -> None:
    # Paired surrogate escapes (an emoji written as \ud83d\ude00) decode to one character;
    # only an unpaired one is left as a surrogate, which UTF-8 cannot encode.
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start]
        raise NotebookError(
            f"{shown} holds a lone surrogate escape (\\u{ord(char):04x}), which is not Unicode text"
        ) from None


def _check_repeats(data: dict[str, Any], repeated: dict[int, tuple[dict[str, Any], list[str]]], shown: str) -> None:
    def refuse(where: str, keys: list[str]) -> NotebookError:
        names = ", ".join(repr(k) for k in keys)
        return NotebookError(f"{shown}: {where} has the key {names} twice; refusing to guess which one counts")

    if id(data) in repeated:
        raise refuse("the top-level object", repeated[id(data)][1])
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        return
    if id(meta) in repeated:
        raise refuse("metadata", repeated[id(meta)][1])
    manifest = meta.get(KEY)
    # Iterative on purpose: the manifest is untrusted and may be as deep as the parser allows.
    stack: list[tuple[Any, str, int]] = [(manifest, f"metadata.{KEY}", 1)]
    while stack:
        value, where, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_MANIFEST_DEPTH:
            raise NotebookError(f"{shown}: metadata.{KEY} is nested more than {MAX_MANIFEST_DEPTH} levels deep")
        if isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
            continue
        if id(value) in repeated:
            raise refuse(where, repeated[id(value)][1])
        stack.extend((v, f"{where}.{k}", depth + 1) for k, v in value.items())
