"""What every installer is: the Installer protocol and the pieces all of them share.

An installer installs exactly the hashed requirements file made from the lock for one
env's interpreter, with `--require-hashes` and without resolving anything: the lock
already did. It also knows its own tool's output: which stderr line is a step of the
install, and what a failure means for the user.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from envsync import proc, rules, tooloutput
from envsync.env.store import env_python as env_python  # re-exported: installers run the env's Python
from envsync.errors import InstallError, LockError, ToolError

OnLine = Callable[[str], None]

# Installs and venv creation have deadlines too: a hung index must not hang envsync.
INSTALL_TIMEOUT = 1800.0
VENV_TIMEOUT = 300.0


@dataclass(frozen=True)
class ProgressUpdate:
    """One line of an installer's output as a step of the install.

    kind: `download` (a file is being fetched), `installed` (one more of the packages
    is done), `message` (anything else worth showing).
    """

    kind: Literal["download", "installed", "message"]
    text: str


class Installer(Protocol):
    """Creates a venv, installs a hashed requirements file into it, and reads its own output."""

    name: str

    def create(self, env: Path, python: Path, *, on_line: OnLine | None = None) -> None: ...

    def install(
        self,
        env: Path,
        requirements: Path,
        *,
        indexes: Sequence[str],
        offline: bool = False,
        on_line: OnLine | None = None,
        refresh: Sequence[str] = (),
    ) -> None:
        """Install `requirements` exactly; `refresh` names packages to take again from the
        index instead of any cache (their cached copy did not match its RECORD)."""
        ...

    def uninstall(self, env: Path, names: Sequence[str], *, on_line: OnLine | None = None) -> None: ...

    def progress(self, line: str) -> ProgressUpdate | None:
        """One line of this tool's output as a step; None for a line not worth showing."""
        ...

    def explain(self, exc: ToolError, total: int) -> InstallError:
        """This tool's failed install as one line a user can act on."""
        ...

    def cache_dir(self) -> Path | None:
        """Where this tool keeps unpacked wheels it copies into envs (`cachememo`); None: no such cache."""
        ...


def check_index_url(url: str) -> str:
    """`url` when it is a plain http(s) URL that cannot end an argument early; LockError otherwise."""
    if not rules.is_index_url(url):
        raise LockError(f"lock names an index that is not an http(s) URL: {url!r}")
    return url


def index_args(indexes: Sequence[str]) -> list[str]:
    """`--index-url` for the first index and `--extra-index-url` for each other (uv and pip agree)."""
    if not indexes:
        raise LockError("no package index to install from")
    args = ["--index-url", check_index_url(indexes[0])]
    for extra in indexes[1:]:
        args += ["--extra-index-url", check_index_url(extra)]
    return args


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    timeout: float,
    on_line: OnLine | None,
    stdout_too: bool = False,
) -> None:
    """Run one installer command; its ToolError carries the command and output for `explain`.

    `stdout_too` also hands `on_line` each line of stdout, for a tool that reports its
    steps there.
    """
    line = on_line or (lambda _line: None)
    proc.run(
        argv, timeout=timeout, what=what, on_stderr_line=line, on_stdout_line=line if stdout_too else None
    )


def install_failure(exc: ToolError, installer: str, total: int, *, mismatch: str | None) -> InstallError:
    """The user's line for a failed install; `mismatch` is the package whose hash did not match."""
    text = exc.stderr or ""
    if mismatch is not None:
        return InstallError(
            f"hash mismatch for {mismatch}: the file the index serves is not the one the lock names",
            hint="the lock was edited or the file was re-uploaded; review the lock's history "
            "and re-create it with `envsync lock --upgrade` only if you trust the change",
            detail=text,
        )
    lower = text.lower()
    if "no space left" in lower or "errno 28" in lower:
        hint = "the disk holding the environment store or uv's cache is full; free space (`envsync envs gc`) and run again"
    elif tooloutput.looks_unreachable(text):
        hint = "the package index could not be reached; check the network and run again (a half-built env is never used)"
    else:
        hint = "run again with --verbose to see the installer's output"
    return InstallError(
        f"installing {total} packages with {installer} failed: {exc.message}", hint=hint, detail=text
    )
