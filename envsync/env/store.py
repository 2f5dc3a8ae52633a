"""The env store: one virtual environment per (lock fingerprint, interpreter), built once.

Layout under `Settings.envs_dir`:

    <key>-<build>/                    an env: key `<fp16>-<tag>` plus a build id, e.g.
                                      `3f2a9c1b7d4e5f60-cp311-a1b2c3/` (a venv)
    <key>-<build>/envsync-ready.json  ready marker: written last, atomically; without it
                                      the directory is a build that never finished
    <key>-<build>/envsync-used        its mtime is the env's last use
    .locks/<key>.lock                 held while an env of that key is built, checked,
                                      repaired or deleted
    .holds/<dir>/<pid>-<rand>.hold    each OS-locked by a process using the env (see holds.py)
    .trash/                           envs being deleted are renamed here first

Why a build id: each build gets a directory of its own and is never renamed (a venv is
not relocatable: pip writes absolute shebangs). If envsync is killed (kill -9) its
installer child may live on for a moment and keep writing; with its own directory
it can only write into a dead build that nothing takes as ready, never into the
rebuild that follows. Completeness is decided by the ready marker alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envsync.env.holds import EnvHold as EnvHold  # re-exported: callers hold envs through the store
from envsync.env.holds import in_use as in_use
from envsync.errors import InstallError
from envsync.fsutil import atomic_write_text
from envsync.settings import Settings

if TYPE_CHECKING:
    from filelock import FileLock

READY = "envsync-ready.json"
USED = "envsync-used"
MARKER_FORMAT = 1
LOCK_TIMEOUT = 2400.0  # longer than one install's deadline, so a waiter outlives a slow build

_DIR = re.compile(r"^[0-9a-f]{16}-[a-z]{2}\d{2,3}t?-[0-9a-f]{6}$")
_TAG = re.compile(r"^[a-z]{2}\d{2,3}t?$")


@dataclass(frozen=True)
class EnvRecord:
    """The ready marker: this env is complete for `fingerprint` on this interpreter."""

    path: Path
    key: str
    fingerprint: str
    python_version: str
    tag: str
    base_python: str
    marker_env: dict[str, str]
    backend: str
    installed: dict[str, str]  # canonical name -> version, as verified after the install
    seed: dict[str, str] = field(default_factory=dict)  # what the venv tool put there itself
    created: float = 0.0
    # What the lock installs on this interpreter (canonical name -> version), as chosen by
    # its markers at the build, and the lock's Python range its interpreter was chosen
    # in; None in records written before they were kept.
    locked: dict[str, str] | None = None
    requires_python: str | None = None

    @property
    def python(self) -> Path:
        return env_python(self.path)

    def usable(self) -> bool:
        """The env's python still resolves (its base interpreter was not uninstalled)."""
        return self.python.exists()

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("path")
        data["format"] = MARKER_FORMAT
        return json.dumps(data, indent=1, sort_keys=True) + "\n"


def env_python(env: Path) -> Path:
    """The interpreter inside a virtual environment."""
    if sys.platform == "win32":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def env_key(fingerprint: str, tag: str) -> str:
    """`<first 16 hex of the fingerprint>-<interpreter tag>`, e.g. `3f2a9c1b7d4e5f60-cp311`."""
    digest = fingerprint.split(":", 1)[-1].lower()
    if not re.fullmatch(r"[0-9a-f]{16,}", digest):
        raise InstallError(f"not a lock fingerprint: {fingerprint!r}")
    if not _TAG.fullmatch(tag):
        raise InstallError(f"unexpected interpreter tag {tag!r}")
    return f"{digest[:16]}-{tag}"


def new_env_path(settings: Settings, key: str) -> Path:
    """A fresh directory name for a build of `key`."""
    return settings.envs_dir / f"{key}-{secrets.token_hex(3)}"


def key_of(path: Path) -> str:
    """The env key of an env directory (its name without the build id)."""
    return path.name.rsplit("-", 1)[0]


def read_ready(path: Path, *, fingerprint: str | None = None) -> EnvRecord | None:
    """The env's ready marker, or None when it is missing, unreadable or for another lock."""
    try:
        data: dict[str, Any] = json.loads((path / READY).read_text(encoding="utf-8"))
        if data.pop("format", None) != MARKER_FORMAT:
            return None
        record = EnvRecord(path=path, **data)
    except (OSError, ValueError, TypeError):
        return None
    if record.key != key_of(path) or (fingerprint is not None and record.fingerprint != fingerprint):
        return None
    return record


def write_ready(record: EnvRecord) -> None:
    """Declare the env complete: the last write of a build or repair."""
    atomic_write_text(record.path / READY, record.to_json())


def unready(path: Path) -> None:
    """Withdraw the marker before changing a built env, so a crash midway forces a rebuild."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / READY)


def ready_envs(settings: Settings, fingerprint: str, *, key: str | None = None) -> list[EnvRecord]:
    """Complete, usable envs of this lock (and `key`) on this machine, most recently used first."""
    prefix = (key or fingerprint.split(":", 1)[-1].lower()[:16]) + "-"
    found = []
    for path in env_dirs(settings):
        if path.name.startswith(prefix):
            rec = read_ready(path, fingerprint=fingerprint)
            if rec is not None and rec.usable():
                found.append(rec)
    return sorted(found, key=lambda r: last_used(r.path) or 0.0, reverse=True)


def dirs_of(settings: Settings, key: str) -> list[Path]:
    """Every directory of `key`, complete or not."""
    return [p for p in env_dirs(settings) if key_of(p) == key]


def mark_used(path: Path, *, now: float | None = None) -> None:
    """Record a use (the mtime of envsync-used); it touches no other file of the env."""
    stamp = path / USED
    when = time.time() if now is None else now
    if not stamp.exists():
        stamp.write_bytes(b"")
    os.utime(stamp, (when, when))


def last_used(path: Path) -> float | None:
    try:
        return (path / USED).stat().st_mtime
    except OSError:
        return None


@contextlib.contextmanager
def locked(
    settings: Settings,
    key: str,
    *,
    timeout: float = LOCK_TIMEOUT,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold the env's lock: one process builds, repairs, checks or deletes it at a time."""
    from filelock import FileLock, Timeout  # not at import: `envsync check` reads without it

    lock = FileLock(_lock_path(settings, key))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        try:
            lock.acquire(timeout=timeout)
        except Timeout as exc:
            raise InstallError(
                f"another envsync process has held environment {key} for over {timeout:.0f} s",
                hint="wait for it to finish, or end it and run again",
            ) from exc
    try:
        yield
    finally:
        lock.release()


def _lock_path(settings: Settings, key: str) -> Path:
    d = settings.envs_dir / ".locks"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{key}.lock"


def discard(settings: Settings, path: Path) -> None:
    """Delete an env: rename it out of its key first, so a crash mid-delete leaves no half env."""
    trash = settings.envs_dir / ".trash"
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{path.name}-{secrets.token_hex(4)}"
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return
    shutil.rmtree(target, ignore_errors=True)


def env_dirs(settings: Settings) -> list[Path]:
    """Every env directory of the store, complete or not, in name order."""
    try:
        entries = list(os.scandir(settings.envs_dir))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries if _DIR.fullmatch(e.name) and e.is_dir(follow_symlinks=False))


def hold(settings: Settings, path: Path, *, timeout: float = LOCK_TIMEOUT) -> EnvHold:
    """Mark the ready env at `path` in use until `release()` (or until this process ends).

    Taken under the key's lock, so `gc` cannot delete the env between the check and
    the hold; raises InstallError when the env is no longer there (sync again).
    """
    with locked(settings, key_of(path), timeout=timeout):
        if read_ready(path) is None:
            raise InstallError(
                f"environment {path.name} is gone or incomplete", hint="run `envsync sync` again"
            )
        return EnvHold(settings, path)


def try_lock(settings: Settings, key: str) -> FileLock | None:
    """The key's lock if nobody holds it now (release it when done), else None; never waits."""
    from filelock import FileLock, Timeout

    lock = FileLock(_lock_path(settings, key))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def clear_key(settings: Settings, key: str) -> list[Path]:
    """Under the key's lock, before a build: delete its dead builds, except any still held."""
    kept = []
    for path in dirs_of(settings, key):
        if in_use(settings, path):
            kept.append(path)
        else:
            discard(settings, path)
    return kept
