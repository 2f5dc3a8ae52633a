"""The uv installer: `uv venv` + `uv pip sync`, exact and hash-checked, from uv's cache.

Installing from pylock.toml is experimental in uv and re-downloaded every wheel in one
measurement; a hashed requirements file reuses uv's cache.

Choices made deliberately here:
- Bytecode is not compiled at install (`--compile-bytecode` off): the build would wait
  for every module of every package (about 12,000 files for the reference data stack,
  tens of seconds of CPU). `envsync.ops.sync` compiles a new env in a background process
  instead, the kernel's own imports first, so the first kernel finds most `.pyc` files
  written without the build waiting for them.
- `--link-mode copy` (clone on macOS): every env owns its files. With hard links (uv's
  choice on Linux, and what uv 0.13's `clone` falls back to where the filesystem has no
  reflinks: an env's `six.py` had the inode of uv's cached copy on ext4 here), an
  edit in one env edits uv's cache and every env linked to it, and `--require-hashes`
  does not notice (uv hashes a wheel when it downloads it, not when it reuses its
  unpacked copy). `envsync.env.files.verify` also gives any file still hard-linked
  elsewhere a copy of its own, so the rule holds whatever uv falls back to.
  Measured with the benchmark harness (`python -m benchmarks`; 43 distributions, 11,847 files, CPython
  3.11, ext4, 2 busy cores, medians of 5): `uv venv` + `uv pip sync` takes 1.00 s with
  hard links and 4.53 s with copies (4.5x); the env takes 2 MB of disk of its own
  with hard links and 260 MB with copies. An envsync build also hashes every file
  against RECORD (1.7 s of a 7.1 s build measured alone). On macOS (APFS) `clone`
  gives copy-on-write copies at the cost of hard links.
- From the cache first (`--offline`), then from the index: every package of a lock is
  pinned by hash, so the index's current pages add nothing when uv already holds the
  wheels, and asking for them again cost 220-280 ms of each warm build (see `_from_cache`).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from envsync import proc, uv
from envsync.env.installers.base import (
    INSTALL_TIMEOUT,
    VENV_TIMEOUT,
    OnLine,
    ProgressUpdate,
    env_python,
    index_args,
    install_failure,
    run,
)
from envsync.errors import InstallError, ToolError

# uv: "  × Failed to download `alpha==1.1.0` ... Hash mismatch for `alpha==1.1.0`".
_HASH_MISMATCH = re.compile(r"Hash mismatch for `([^`]+)`")

# Every env gets its own copy of each file: see the module docstring.
LINK_MODE = "clone" if sys.platform == "darwin" else "copy"


class UvInstaller:
    """uv venv + uv pip sync: exact, hash-checked, from uv's cache."""

    name = "uv"

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or uv.require()

    def create(self, env: Path, python: Path, *, on_line: OnLine | None = None) -> None:
        run(
            [*uv.command("venv", binary=self.binary), "--python", python, env],
            what="uv venv",
            timeout=VENV_TIMEOUT,
            on_line=on_line,
        )

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
        if refresh:
            self.evict(refresh, on_line=on_line)
        flags: list[str | os.PathLike[str]] = [
            "--require-hashes",
            "--python",
            env_python(env),
            "--link-mode",
            LINK_MODE,
            *index_args(indexes),
        ]
        for name in refresh:
            flags += ["--reinstall-package", name, "--refresh-package", name]
        if len(indexes) > 1:
            # Every artifact is pinned by hash, so taking a file from any allowed index is safe.
            flags += ["--index-strategy", "unsafe-best-match"]
        flags.append(requirements)
        if not offline and not refresh and self._from_cache(flags, on_line):
            return
        argv = [*uv.command("pip", "sync", offline=offline, binary=self.binary), *flags]
        run(argv, what="uv pip sync", timeout=INSTALL_TIMEOUT, on_line=on_line)

    def _from_cache(self, flags: Sequence[str | os.PathLike[str]], on_line: OnLine | None) -> bool:
        """Install from uv's cache alone (`--offline`); False, with nothing shown, when it cannot.

        Online, uv asks the index again for every package's page before it installs,
        hashes pinned or not: 220-280 ms of a warm build here, and as long as the network
        makes it. A hashed lock needs no page it has not already seen: when the cache holds
        every wheel, the same wheels are installed and checked against the same hashes.
        When something is missing (a new lock, an evicted wheel), uv fails before it
        installs anything and the caller asks the index as before: one more uv start,
        tens of milliseconds.
        """
        lines: list[str] = []
        try:
            run(
                [*uv.command("pip", "sync", offline=True, binary=self.binary), *flags],
                what="uv pip sync --offline",
                timeout=INSTALL_TIMEOUT,
                on_line=lines.append,
            )
        except ToolError:
            return False
        if on_line is not None:
            for line in lines:
                on_line(line)
        return True

    def evict(self, names: Sequence[str], *, on_line: OnLine | None = None) -> None:
        """Remove `names` from uv's cache, so their next install unpacks a fresh download."""
        run(
            [*uv.command("cache", "clean", binary=self.binary), *names],
            what="uv cache clean",
            timeout=VENV_TIMEOUT,
            on_line=on_line,
        )

    def cache_dir(self) -> Path | None:
        """uv's cache folder, as uv itself reports it (`uv cache dir`); None when uv cannot say."""
        try:
            out = proc.run([*uv.command("cache", "dir", binary=self.binary)], timeout=VENV_TIMEOUT, what="uv cache dir")
        except ToolError:
            return None
        path = Path(out.stdout.strip())
        return path if out.stdout.strip() and path.is_dir() else None

    def uninstall(self, env: Path, names: Sequence[str], *, on_line: OnLine | None = None) -> None:
        if names:
            run(
                [*uv.command("pip", "uninstall", binary=self.binary), "--python", env_python(env), *names],
                what="uv pip uninstall",
                timeout=VENV_TIMEOUT,
                on_line=on_line,
            )

    def progress(self, line: str) -> ProgressUpdate | None:
        """uv prints `Downloading x` / `Downloaded x` and one ` + name==version` per installed package."""
        text = line.strip()
        if not text:
            return None
        if text.startswith(("Downloading ", "Downloaded ")):
            return ProgressUpdate("download", text)
        if text.startswith("+ "):
            return ProgressUpdate("installed", text)
        return ProgressUpdate("message", text)

    def explain(self, exc: ToolError, total: int) -> InstallError:
        """One line a user can act on, naming the package when a hash did not match."""
        hit = _HASH_MISMATCH.search(exc.stderr or "")
        return install_failure(exc, self.name, total, mismatch=hit.group(1) if hit else None)


@functools.cache
def runnable_binary() -> str | None:
    """uv's binary when it exists and runs, else None; asked once a process (a run builds few envs)."""
    path = uv.find()
    if path is None:
        return None
    try:
        proc.run([path, "--version"], timeout=30, what="uv --version")
    except (ToolError, OSError):
        return None
    return path
