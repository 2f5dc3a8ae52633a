"""What this machine last built for each project, so `launch` can say what a collaborator changed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from envsync.errors import LockError
from envsync.fsutil import atomic_write_text
from envsync.lock.model import Lock, lock_from_dict
from envsync.rules import check_project
from envsync.settings import Settings

FORMAT = 1


@dataclass(frozen=True)
class LastRun:
    project: str
    fingerprint: str
    lock: Lock
    when: float
    notebook: str | None = None


def _path(settings: Settings, project: str) -> Path:
    return settings.state_dir / "runs" / f"{check_project(project)}.json"


def record_run(
    settings: Settings, *, project: str, lock: Lock, notebook: str | None = None, now: float | None = None
) -> Path:
    """Remember (atomically) that this machine ran `project` with `lock`."""
    path = _path(settings, project)
    data = {
        "format": FORMAT,
        "project": project,
        "fingerprint": lock.fingerprint,
        "when": time.time() if now is None else now,
        "notebook": notebook,
        "lock": lock.to_dict(),
    }
    atomic_write_text(path, json.dumps(data, sort_keys=True) + "\n")
    return path


def last_run_info(settings: Settings, project: str) -> LastRun | None:
    """The last recorded run, or None when there is none or the record is unreadable."""
    try:
        data = json.loads(_path(settings, project).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None
        lock = lock_from_dict(data["lock"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, LockError):
        # A damaged record only costs the "what changed" message; never fail a launch on it.
        return None
    return LastRun(
        project=project,
        fingerprint=lock.fingerprint,
        lock=lock,
        when=float(data.get("when", 0.0)),
        notebook=data.get("notebook"),
    )


def last_run(settings: Settings, project: str) -> Lock | None:
    """The lock this machine last built for `project`; read it before `sync` records the new one."""
    info = last_run_info(settings, project)
    return info.lock if info else None
