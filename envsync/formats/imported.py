"""What an import reads out of another tool's file, before envsync resolves it."""

from __future__ import annotations

from dataclasses import dataclass, field


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
