"""Import from a pyproject.toml: its `[project]` dependencies and requires-python."""

from __future__ import annotations

from pathlib import Path

from envsync.formats.files import read_toml


def read_pyproject(path: Path) -> tuple[list[str], str | None]:
    """The project's dependencies and requires-python, as the file declares them."""
    data = read_toml(path)
    project = data.get("project", {})
    return list(project.get("dependencies", [])), project.get("requires-python")
