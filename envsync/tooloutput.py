"""Reading what a tool wrote when it failed: its reason in one line, and whether the
network or the package index was out of reach; a tool's output decoded line by line."""

from __future__ import annotations

import codecs
import io
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# uv words its reasons "  ╰─▶ Because …", "Caused by: …" or "cause: …": keep the reason.
_PREFIX = re.compile(r"^(caused by|cause|error|hint):\s*", re.I)
_UNREACHABLE = ("failed to fetch", "error sending request", "connection refused", "dns error", "timed out")


def reason_lines(text: str) -> list[str]:
    """A tool's output as plain non-empty lines, without colour, tree marks or `cause:` prefixes."""
    out = []
    for line in _ANSI.sub("", text).splitlines():
        line = _PREFIX.sub("", line.strip().strip("╰─▶×│").strip()).strip()
        if line:
            out.append(line)
    return out


def last_line(text: str) -> str:
    """The last non-empty line of a tool's output: usually its reason."""
    lines = reason_lines(text)
    return lines[-1] if lines else "no output"


def looks_unreachable(text: str) -> bool:
    """Does a tool's output say the network or the index could not be reached?"""
    lower = text.lower()
    return any(s in lower for s in _UNREACHABLE)


class LineReader:
    """Bytes from one pipe decoded as text mode would (UTF-8, `\\r\\n` and `\\r` read as `\\n`)."""

    def __init__(self) -> None:
        self._decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8")("replace"), True)
        self._parts: list[str] = []
        self._partial = ""

    def feed(self, data: bytes, final: bool = False) -> list[str]:
        """Take `data` in; return the lines it completed (without their newline)."""
        text = self._decoder.decode(data, final)
        self._parts.append(text)
        *lines, self._partial = (self._partial + text).split("\n")
        if final and self._partial:
            lines.append(self._partial)
        return lines

    def text(self) -> str:
        return "".join(self._parts)
