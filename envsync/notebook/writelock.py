"""The lock every envsync writer of one notebook holds, kept where only this user can write.

A lock file in a shared folder (/tmp) lets any other user plant a symbolic link or hold
the lock there and so stop every write of the notebook. The lock files live instead in
`$XDG_RUNTIME_DIR/envsync/locks` when that folder is this user's alone, else in the user
cache folder (`~/.cache/envsync/locks` on Linux); a folder owned by someone else or
writable by others is refused, and the lock file is opened without following links.
The holder writes its PID into the lock file, so one that waits in vain can say who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from envsync import procinfo
from envsync.errors import NotebookError

# Long enough for another envsync's splice and rename (milliseconds), short enough that a
# stuck holder is reported instead of leaving the user at a silent prompt.
WAIT_SECONDS = 5.0
_POLL = 0.05
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def lock_dir() -> Path:
    """This user's folder for notebook locks, created 0700; NotebookError if it is not private."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _private(Path(runtime), exact=True) is None:
        base = Path(runtime) / "envsync"
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("envsync", appauthor=False))
    folder = base / "locks"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise NotebookError(f"cannot create the lock folder {folder}: {exc.strerror}") from None
    for path in (base, folder):
        problem = _private(path, exact=False)
        if problem is not None:
            raise NotebookError(
                f"refusing to keep notebook locks in {path}: it {problem}",
                hint=f"remove {path} (envsync creates it again, private to you) or make it yours with mode 0700",
            )
    return folder


def _private(path: Path, *, exact: bool) -> str | None:
    """Why `path` is not a folder only this user can write, or None when it is."""
    try:
        st = path.lstat()
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"belongs to another user (uid {st.st_uid})"
    if st.st_mode & (0o077 if exact else 0o022):
        return f"can be written by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def lock_path(target: Path) -> Path:
    """The lock file of the notebook at the resolved path `target`."""
    key = hashlib.sha256(str(target).encode()).hexdigest()[:24]
    return lock_dir() / f"notebook-{key}.lock"


@contextlib.contextmanager
def held(target: Path, shown: str, *, wait: float | None = None) -> Iterator[None]:
    """Hold the write lock of the notebook at `target` (resolved); NotebookError naming the holder."""
    path = lock_path(target)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
    except OSError as exc:
        raise NotebookError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotebookError(f"the lock file {path} is not a regular file")
        deadline = time.monotonic() + (WAIT_SECONDS if wait is None else wait)
        while not lock_descriptor(fd, blocking=False):
            if time.monotonic() >= deadline:
                raise NotebookError(
                    f"{_holder(fd)} is writing {shown}; try again when it finishes",
                    hint=f"the lock is {path}",
                )
            time.sleep(_POLL)
        try:
            _write_pid(fd)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            unlock_descriptor(fd)
    finally:
        os.close(fd)


def _write_pid(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())


def _holder(fd: int) -> str:
    """`another envsync (pid N: envsync add …)` as far as the lock file and the OS tell."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = int(os.read(fd, 32).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return "another envsync"
    argv = procinfo.cmdline(pid)
    if not argv:
        return f"another envsync (pid {pid})"
    return f"another envsync (pid {pid}: {_command(argv)})"


def _command(argv: list[str]) -> str:
    """A command line as a user typed it: `envsync add nb.ipynb beta` for `python -m envsync …`."""
    if len(argv) >= 3 and argv[1] == "-m":
        words = [argv[2], *argv[3:]]
    else:
        words = [os.path.basename(argv[0]), *argv[1:]]
    # One line whatever the holder's argv holds: the message is one ERROR line.
    text = " ".join(" ".join(words).split())
    return text if len(text) <= 120 else text[:119] + "…"
