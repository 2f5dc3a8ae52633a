"""The pip installer: virtualenv + the env's own pip with --require-hashes --no-deps.

pip reports its steps on stdout and its errors on stderr: progress reads both.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

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

_MISMATCH_HEADER = "DO NOT MATCH THE HASHES"
# pip lists each mismatched file under its header as "    name==version from <url> ...".
_HASH_MISMATCH = re.compile(r"^\s+(\S+==\S+) from ", re.MULTILINE)
# One line for each package of the requirements file: fetched, or there already (repair).
_PER_PACKAGE = ("Collecting ", "Requirement already satisfied: ")
_DOWNLOAD = ("Downloading ", "Using cached ")


class PipInstaller:
    """virtualenv + the env's own pip with --require-hashes --no-deps."""

    name = "pip"

    def create(self, env: Path, python: Path, *, on_line: OnLine | None = None) -> None:
        # --no-download: seed from virtualenv's embedded wheels, so this works offline too.
        run(
            [
                sys.executable,
                "-m",
                "virtualenv",
                "--python",
                python,
                "--no-download",
                "--no-periodic-update",
                "--no-setuptools",
                "--quiet",
                env,
            ],
            what="virtualenv",
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
        if offline:
            raise InstallError(
                "the pip backend cannot install offline", hint="use the uv backend, which reads its cache"
            )
        run(
            [
                env_python(env),
                "-m",
                "pip",
                "install",
                "--isolated",
                "--no-input",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "--require-hashes",
                "--no-deps",
                # pip's only cache is of downloads (hash-checked on every use); a refresh skips it.
                *(["--no-cache-dir"] if refresh else []),
                *index_args(indexes),
                "-r",
                requirements,
            ],
            what="pip install",
            timeout=INSTALL_TIMEOUT,
            on_line=on_line,
            stdout_too=True,
        )

    def cache_dir(self) -> Path | None:
        return None  # pip unpacks each wheel anew: every file is hashed after the install

    def uninstall(self, env: Path, names: Sequence[str], *, on_line: OnLine | None = None) -> None:
        if names:
            run(
                [
                    env_python(env),
                    "-m",
                    "pip",
                    "uninstall",
                    "--isolated",
                    "--yes",
                    "--disable-pip-version-check",
                    *names,
                ],
                what="pip uninstall",
                timeout=VENV_TIMEOUT,
                on_line=on_line,
            )

    def progress(self, line: str) -> ProgressUpdate | None:
        """pip prints one `Collecting name==version` (or `Requirement already satisfied`) a package."""
        text = line.strip()
        if not text:
            return None
        if text.startswith(_PER_PACKAGE):
            return ProgressUpdate("installed", text)
        if text.startswith(_DOWNLOAD):
            return ProgressUpdate("download", text)
        return ProgressUpdate("message", text)

    def explain(self, exc: ToolError, total: int) -> InstallError:
        """One line a user can act on, naming the package when a hash did not match."""
        text = exc.stderr or ""
        hit = None
        if _MISMATCH_HEADER in text:
            hit = _HASH_MISMATCH.search(text.split(_MISMATCH_HEADER, 1)[1])
        return install_failure(exc, self.name, total, mismatch=hit.group(1) if hit else None)
