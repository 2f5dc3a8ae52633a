"""Words for people: how a lock diff, a summary and a lock result are shown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from envsync.cli.app import App, escape_markup

if TYPE_CHECKING:
    from envsync.lock.diff import LockDiff


def esc(value: object) -> str:
    """Text from a notebook or the disk, shown as it is: never read as rich markup."""
    return escape_markup(str(value))


_STYLE = {
    "added": ("+", "green"),
    "removed": ("-", "red"),
    "upgraded": ("↑", "cyan"),
    "downgraded": ("↓", "magenta"),
    "hashes-changed": ("!", "bold red"),
    "artifacts-changed": ("~", "yellow"),
    "marker-changed": ("~", "yellow"),
}


def diff_lines(d: LockDiff) -> list[str]:
    """Plain-markup lines describing a LockDiff (empty list when nothing changed)."""
    lines: list[str] = []
    if d.requires_python:
        lines.append(f"  requires-python: {esc(d.requires_python[0] or '(none)')} → {esc(d.requires_python[1] or '(none)')}")
    if d.environments:
        was, now = d.environments
        lines.append(f"  target environments: {', '.join(was) or '(none)'} → {', '.join(now) or '(none)'}")
    for c in d.changes:
        sign, style = _STYLE.get(c.kind, ("?", "white"))
        name, old, new = esc(c.name), esc(c.old), esc(c.new)
        if c.kind == "added":
            text = f"{name} {new}"
        elif c.kind == "removed":
            text = f"{name} {old}"
        elif c.kind in ("upgraded", "downgraded"):
            text = f"{name} {old} → {new}"
        elif c.kind == "hashes-changed":
            text = f"{name} {new}: SAME VERSION, DIFFERENT FILE HASHES (re-uploaded file or tampered lock)"
        else:
            text = f"{name} {new} ({c.kind.replace('-', ' ')})"
        lines.append(f"  [{style}]{sign} {text}[/]")
    return lines


def print_diff(app: App, d: LockDiff, *, title: str) -> None:
    """A one-line summary of `d` under `title`, then a line per change."""
    if d.empty:
        app.say(f"{esc(title)}: no changes")
        return
    counts: dict[str, int] = {}
    for c in d.changes:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    app.say(f"{esc(title)}: {summary or 'settings changed'}")
    for line in diff_lines(d):
        app.say(line)
