"""What `launch` checks before anything runs: is the lock current, what changed since
this machine last ran the project, and may we go on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from envsync.errors import EnvsyncError, LockError, MissingManifestError, StaleLockError
from envsync.lock.diff import LockDiff, diff
from envsync.lock.model import Lock
from envsync.ops import project as projects
from envsync.settings import Settings


class NoticeKind(enum.StrEnum):
    """What a launch notice is about; the values are what `launch --json` shows."""

    RELOCKED = "relocked"
    CHANGED_SINCE_LAST_RUN = "changed-since-last-run"
    PYTHON_VERSION = "python-version"
    DRIFT_REPAIRED = "drift-repaired"


@dataclass(frozen=True)
class Notice:
    """One thing the user must be told before the kernel runs."""

    kind: NoticeKind
    message: str
    diff: LockDiff | None = None
    details: tuple[str, ...] = ()


@dataclass
class Preflight:
    project: projects.Project
    lock: Lock
    notices: list[Notice] = field(default_factory=list)


def load_for_launch(path: Path) -> projects.Project:
    """Load the notebook; with no manifest, say how to add one (or import juv's)."""
    try:
        return projects.load(path)
    except MissingManifestError as exc:
        from envsync.formats.juv import header_meta
        from envsync.notebook.file import read_notebook

        try:
            found = header_meta(read_notebook(path).data, str(path))
        except EnvsyncError:
            found = None
        if found is not None:
            raise MissingManifestError(
                f"{path} has {found[1]}'s `# /// script` metadata but no envsync manifest",
                hint=f"import it: `envsync import {path} {path}`",
            ) from None
        raise exc


def check(
    proj: projects.Project,
    *,
    settings: Settings,
    frozen: bool,
    yes: bool,
    last_run: Lock | None,
    progress: Callable[[str], None] | None = None,
) -> Preflight:
    """Stale lock → re-lock (or refuse when frozen); lock vs last run → diff, hash changes need --yes."""
    path = proj.path
    notices: list[Notice] = []
    if proj.manifest.lock_is_stale:
        if frozen:
            raise StaleLockError(
                f"the lock in {path} is stale (the declared dependencies, Python range, targets or index changed) and --frozen forbids re-locking",
                hint=f"run `envsync lock {path}` and share the notebook, or launch without --frozen",
            )
        old = proj.manifest.lock
        res = projects.relock(proj, proj.manifest, settings=settings, progress=progress)
        proj = projects.load(path)
        notices.append(
            Notice(
                NoticeKind.RELOCKED,
                "the lock was stale against the declared dependencies: re-locked and saved in the notebook",
                diff=diff(old, res.manifest.lock),
            )
        )
    lock = proj.manifest.lock
    if lock is None:  # relock always writes one; this guards a hand-edited file
        raise LockError(f"{path} has no lock")
    if last_run is not None and last_run.fingerprint != lock.fingerprint:
        d = diff(last_run, lock)
        notices.append(
            Notice(
                NoticeKind.CHANGED_SINCE_LAST_RUN,
                "the lock differs from what this machine last ran for this project (a collaborator changed it)",
                diff=d,
            )
        )
        if d.hash_changes and not yes:
            names = ", ".join(c.name for c in d.hash_changes)
            raise EnvsyncError(
                f"{names}: same version as last run but different file hashes; this can mean a tampered lock",
                hint="review the change (`envsync diff`), then run again with --yes if you trust it",
            )
    return Preflight(project=proj, lock=lock, notices=notices)
