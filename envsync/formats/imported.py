"""What an import reads out of another tool's file, before envsync resolves it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.markers import InvalidMarker, Marker

from envsync import rules
from envsync.errors import EnvsyncError


@dataclass
class Imported:
    """Declared dependencies plus what the source knew about how they were resolved.

    `constraints` are the versions the source had locked (or its -c lines): the import resolves under
    them so the lock keeps those versions, and `lock --upgrade` may still move them later.
    `hashes` maps a package name to the version and sha256 values the source required.
    `notes` say, one line each, what was taken, what was left and why.
    """

    dependencies: list[str] = field(default_factory=list)
    requires_python: str | None = None
    project: str | None = None
    index: str | None = None
    environments: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    exclude_newer: str | None = None
    hashes: dict[str, tuple[str, frozenset[str], str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kind: str = ""
    # The source is envsync's own export: its requires-python range is taken as it is.
    whole_range: bool = False


# A date or an RFC 3339 timestamp, as uv's --exclude-newer takes it.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?")


def pin(name: object, version: object, marker: object = None, *, where: str) -> str:
    """`name==version ; marker` from another tool's lock, each part checked (it reaches uv's input)."""
    if not rules.is_package_name(name) or not rules.is_version_text(version):
        raise EnvsyncError(f"{where}: a locked package has no valid name and version ({rules.shown(name)!r} {rules.shown(version)!r})")
    line = f"{name}=={version}"
    if marker is not None:
        try:
            line += f" ; {Marker(str(marker))}"
        except InvalidMarker:
            raise EnvsyncError(f"{where}: {name} has an invalid marker {rules.shown(marker)!r}") from None
    return line


def check_date(value: str, *, where: str) -> str:
    """An exclude-newer value from a file: a date or timestamp, nothing uv could read as an option."""
    if not _DATE.fullmatch(value):
        raise EnvsyncError(f"{where}: exclude-newer {rules.shown(value)!r} is not a date or RFC 3339 timestamp")
    return value
