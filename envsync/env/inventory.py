"""What the store holds and what can go: every env with its state (`envs list`), and `gc`.

Neither waits for a build: an env whose key is locked is reported as building (or busy)
and left alone.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from envsync.env.holds import holds_dir, in_use
from envsync.env.store import discard, env_dirs, key_of, last_used, read_ready, try_lock
from envsync.settings import Settings


class EnvState(enum.StrEnum):
    """What one directory of the store is; the values are what `envs list` shows."""

    READY = "ready"
    BUILDING = "building"
    INCOMPLETE = "incomplete"  # a build that died
    BROKEN = "broken"  # its interpreter is gone


@dataclass(frozen=True)
class EnvInfo:
    """One directory of the store, as `envs list` shows it."""

    key: str
    path: Path
    state: EnvState
    fingerprint: str | None
    python_version: str | None
    backend: str | None
    packages: int
    created: float | None
    last_used: float | None
    in_use: bool
    size_bytes: int | None = None


def list_envs(settings: Settings, *, with_size: bool = False) -> list[EnvInfo]:
    """Every env directory of the store with its state; never waits for a build."""
    out = []
    for path in env_dirs(settings):
        rec = read_ready(path)
        if rec is not None:
            state = EnvState.READY if rec.usable() else EnvState.BROKEN
        else:
            lock = try_lock(settings, key_of(path))
            state = EnvState.BUILDING if lock is None else EnvState.INCOMPLETE
            if lock is not None:
                lock.release()
        out.append(
            EnvInfo(
                key=key_of(path),
                path=path,
                state=state,
                fingerprint=rec.fingerprint if rec else None,
                python_version=rec.python_version if rec else None,
                backend=rec.backend if rec else None,
                packages=len(rec.installed) if rec else 0,
                created=rec.created if rec else None,
                last_used=last_used(path),
                in_use=in_use(settings, path),
                size_bytes=_size(path) if with_size else None,
            )
        )
    return out


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class GcReason(enum.StrEnum):
    """Why `gc` removed or kept an env; `GcEntry.reason` gives the words `envs gc` prints."""

    UNUSED = "unused"  # for longer than the age limit: removed
    INCOMPLETE = "incomplete build"
    BROKEN = "broken (its Python is gone)"
    IN_USE = "in use"
    BUSY = "busy"  # its key's lock is taken: a build, check or repair in progress
    RECENTLY_USED = "recently used"


@dataclass(frozen=True)
class GcEntry:
    key: str
    path: Path
    removed: bool
    kind: GcReason
    days: float | None = None  # the age limit an UNUSED env passed

    @property
    def reason(self) -> str:
        """The reason in words, e.g. `unused for 30 days` or `in use`."""
        if self.kind is GcReason.UNUSED:
            return f"unused for {self.days:g} days"
        return self.kind.value


@dataclass(frozen=True)
class GcResult:
    entries: tuple[GcEntry, ...]
    dry_run: bool

    @property
    def removed(self) -> list[GcEntry]:
        return [e for e in self.entries if e.removed]

    @property
    def kept(self) -> list[GcEntry]:
        return [e for e in self.entries if not e.removed]


def _verdict(settings: Settings, path: Path, cutoff: float) -> GcReason:
    """Why the env at `path` goes or stays; called under its key's lock."""
    rec = read_ready(path)
    if in_use(settings, path):
        return GcReason.IN_USE
    if rec is None:
        return GcReason.INCOMPLETE
    if not rec.usable():
        return GcReason.BROKEN
    if (last_used(path) or rec.created) < cutoff:
        return GcReason.UNUSED
    return GcReason.RECENTLY_USED


_REMOVED = frozenset({GcReason.UNUSED, GcReason.INCOMPLETE, GcReason.BROKEN})


def gc(
    settings: Settings, *, older_than_days: float, dry_run: bool = False, now: float | None = None
) -> GcResult:
    """Remove envs unused for `older_than_days`, and dead builds whatever their age.

    Never removes an env a live process holds (`store.hold`), nor any env of a key whose
    lock is taken (a build, check or repair in progress). With `dry_run`, only reports.
    """
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    entries = []
    for path in env_dirs(settings):
        key = key_of(path)
        lock = try_lock(settings, key)
        if lock is None:
            entries.append(GcEntry(key, path, False, GcReason.BUSY))
            continue
        try:
            why = _verdict(settings, path, cutoff)
            remove = why in _REMOVED
            if remove and not dry_run:
                discard(settings, path)
                shutil.rmtree(holds_dir(settings, path), ignore_errors=True)
            days = older_than_days if why is GcReason.UNUSED else None
            entries.append(GcEntry(key, path, remove, why, days))
        finally:
            lock.release()
    if not dry_run:
        # Deletions a crash interrupted: already out of their keys, nobody uses them.
        for leftover in _children(settings.envs_dir / ".trash"):
            shutil.rmtree(leftover, ignore_errors=True)
    return GcResult(tuple(entries), dry_run)


def _children(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder)]
    except OSError:
        return []
