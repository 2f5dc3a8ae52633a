"""Running an installer for a sync: its output as progress events, and the file check after it.

`install` turns each line of the installer's output into a ProgressEvent;
`verified_files` hashes what was installed against each package's RECORD and takes a
package whose cached copy does not match once more from the index.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from envsync.env import cachememo, drift, files
from envsync.env.cachememo import CacheMemo
from envsync.env.installers import Installer
from envsync.errors import InstallError, ToolError
from envsync.settings import Settings


class Phase(enum.StrEnum):
    """The step of a sync a ProgressEvent reports."""

    INTERPRETER = "interpreter"
    WAIT = "wait"
    VENV = "venv"
    INSTALL = "install"
    DOWNLOAD = "download"
    VERIFY = "verify"
    REUSE = "reuse"
    REPAIR = "repair"
    KERNEL = "kernel"


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long sync, for the CLI to render."""

    phase: Phase
    message: str
    done: int | None = None
    total: int | None = None


Progress = Callable[[ProgressEvent], None]


def quiet(_event: ProgressEvent) -> None:
    return None


def cache_memo(be: Installer, settings: Settings) -> CacheMemo:
    """This machine's memo of the installer's cached files already hashed against RECORD."""
    return CacheMemo(settings.state_dir / cachememo.FILE, be.cache_dir())


def memo_meanwhile(be: Installer, settings: Settings) -> Callable[[], CacheMemo | None]:
    """Read the cache memo, and ask where the installer's cache is, in a thread while it installs.

    That is tens of milliseconds the check after the install would otherwise wait for.
    The cache's folders are listed after the install (it may add some). The callable
    returned waits for the thread (it must end before the check forks) and gives the
    memo, or None when reading it failed.
    """
    import threading

    found: list[CacheMemo] = []

    def read() -> None:
        try:
            found.append(cache_memo(be, settings))
        except Exception:  # noqa: BLE001 - the check reads it again itself
            return

    thread = threading.Thread(target=read, name="envsync-cache-memo", daemon=True)
    thread.start()

    def result() -> CacheMemo | None:
        thread.join()
        if found and found[0].cache_dir is None:  # a cache the install has just made
            found[0].cache_dir = be.cache_dir()
        return found[0] if found else None

    return result


def uninstall(be: Installer, env: Path, names: Sequence[str]) -> None:
    try:
        be.uninstall(env, names)
    except ToolError as exc:
        raise InstallError(f"cannot remove {', '.join(names)}: {exc.message}", detail=exc.stderr) from exc


def verified_files(
    be: Installer,
    env: Path,
    names: Iterable[str],
    requirements: Path,
    indexes: Sequence[str],
    settings: Settings,
    report: Progress,
    memo: CacheMemo | None = None,
) -> files.Record:
    """Hash every installed file of `names` against its RECORD; the record to keep.

    A file that does not match came from a corrupted cache entry (or wheel copy): the
    package is evicted from the installer's cache, installed once more from the index
    and hashed again; InstallError when it still does not match.
    """
    report(ProgressEvent(Phase.VERIFY, "hashing the installed files against their RECORD"))
    memo = memo or cache_memo(be, settings)
    entries, problems = files.verify(env, drift.dist_infos(env, names), memo)
    if not problems:
        return entries
    bad = sorted(problems)
    if settings.offline:
        raise InstallError(
            f"files of {', '.join(bad)} do not match their RECORD: {_files_summary(problems)}",
            hint="the cached copy is corrupted; run again without --offline to download it again",
        )
    report(
        ProgressEvent(Phase.REPAIR, f"files of {', '.join(bad)} do not match their RECORD: downloading again")
    )
    uninstall(be, env, bad)
    install(be, env, requirements, indexes, settings, len(bad), report, refresh=bad)
    again, still = files.verify(env, drift.dist_infos(env, bad))
    if still:
        raise InstallError(
            f"files of {', '.join(sorted(still))} do not match their RECORD even after a fresh download: "
            f"{_files_summary(still)}",
            hint="the index serves a wheel whose RECORD does not describe its own files; report it to the package's maintainers",
        )
    entries.update(again)
    return entries


def _files_summary(problems: files.Problems) -> str:
    listed = [f"{p.path} ({p.problem})" for found in problems.values() for p in found]
    more = f" and {len(listed) - 3} more" if len(listed) > 3 else ""
    return ", ".join(listed[:3]) + more


def install(
    be: Installer,
    env: Path,
    requirements: Path,
    indexes: Sequence[str],
    settings: Settings,
    total: int,
    report: Progress,
    *,
    refresh: Sequence[str] = (),
) -> None:
    done = 0

    def on_line(line: str) -> None:
        nonlocal done
        step = be.progress(line)
        if step is None:
            return
        if step.kind == "download":
            report(ProgressEvent(Phase.DOWNLOAD, step.text))
        elif step.kind == "installed":
            done += 1
            report(ProgressEvent(Phase.INSTALL, step.text, done, total))
        else:
            report(ProgressEvent(Phase.INSTALL, step.text, None, total))

    try:
        be.install(
            env, requirements, indexes=indexes, offline=settings.offline, on_line=on_line, refresh=refresh
        )
    except ToolError as exc:
        raise be.explain(exc, total) from exc
