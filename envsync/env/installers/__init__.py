"""Installers behind one protocol: uv (default) and pip (virtualenv + pip).

Both install exactly the hashed requirements file made from the lock for one env's
interpreter, with `--require-hashes` and without resolving anything: the lock already
did. Installing from pylock.toml is experimental in uv and re-downloaded every wheel
in one measurement; a hashed requirements file reuses uv's cache.

Choices made deliberately here:
- Bytecode is not compiled at install (`--compile-bytecode` off). Compiling a 49-package
  data stack turns a ~1.5 s build into ~40 s, on every build of every lock; without it
  the first import of each module writes its `__pycache__` once, so only the first
  kernel start of a new env pays (seconds, once), and envs never used pay nothing.
- `--link-mode` is uv's platform default, named explicitly (clone on macOS, hardlink
  elsewhere; UV_LINK_MODE is scrubbed from the child environment): many envs of
  similar locks share one copy of numpy on disk, and a build takes about a second.
  The cost is that editing an installed file in place edits it for every env that
  links it; envs here are built from locks and repaired, not edited.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envsync import proc, uv
from envsync.errors import InstallError, LockError, ToolError, UsageError
from envsync.lock.model import LockedPackage

OnLine = Callable[[str], None]

# Installs and venv creation have deadlines too: a hung index must not hang envsync.
INSTALL_TIMEOUT = 1800.0
VENV_TIMEOUT = 300.0

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^https?://[^\s\"'\\]+$")


def env_python(env: Path) -> Path:
    """The interpreter inside a virtual environment."""
    if sys.platform == "win32":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def hashed_requirements(packages: Iterable[LockedPackage]) -> str:
    """A requirements file pinning each package to its version and every locked artifact hash.

    Names, versions and hashes come from someone else's notebook: each is checked so
    that none can smuggle an option (`--index-url ...`) or a URL into the file.
    """
    lines = []
    for p in sorted(packages, key=lambda p: p.key):
        if not _NAME.fullmatch(p.name):
            raise LockError(f"lock: {p.name!r} is not a valid package name")
        try:
            Version(p.version)
        except InvalidVersion as exc:
            raise LockError(f"lock: {p.name} has an invalid version {p.version!r}") from exc
        if not re.fullmatch(r"[A-Za-z0-9.+!_-]+", p.version):
            raise LockError(f"lock: {p.name} has an invalid version {p.version!r}")
        hashes = sorted({a.sha256 for a in (*p.wheels, *([p.sdist] if p.sdist else []))})
        if not hashes:
            raise LockError(f"lock: {p.name} {p.version} lists no artifact to install")
        for h in hashes:
            if not _SHA256.fullmatch(h):
                raise LockError(f"lock: {p.name} {p.version} has a malformed sha256 {h!r}")
        lines.append(f"{canonicalize_name(p.name)}=={p.version} \\")
        lines.extend(f"    --hash=sha256:{h} \\" for h in hashes[:-1])
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    return "".join(line + "\n" for line in lines)


def check_index_url(url: str) -> str:
    if not _URL.fullmatch(url):
        raise LockError(f"lock names an index that is not an http(s) URL: {url!r}")
    return url


class Backend(Protocol):
    """Creates a venv and installs a hashed requirements file into it, nothing else."""

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
    ) -> None: ...

    def uninstall(self, env: Path, names: Sequence[str], *, on_line: OnLine | None = None) -> None: ...


def _index_args(indexes: Sequence[str]) -> list[str]:
    if not indexes:
        raise LockError("no package index to install from")
    args = ["--index-url", check_index_url(indexes[0])]
    for extra in indexes[1:]:
        args += ["--extra-index-url", check_index_url(extra)]
    return args


def _run(argv: list[str | os.PathLike[str]], *, what: str, timeout: float, on_line: OnLine | None) -> None:
    # ToolError carries the command and stderr; sync turns it into one user-facing line.
    proc.run(argv, timeout=timeout, what=what, on_stderr_line=on_line or (lambda _line: None))


class UvBackend:
    """uv venv + uv pip sync: exact, hash-checked, from uv's cache."""

    name = "uv"

    def __init__(self, uv: str) -> None:
        self.uv = uv

    def create(self, env: Path, python: Path, *, on_line: OnLine | None = None) -> None:
        _run(
            [self.uv, "venv", "--no-config", "--no-python-downloads", "--python", python, env],
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
    ) -> None:
        argv: list[str | os.PathLike[str]] = [
            self.uv,
            "pip",
            "sync",
            "--no-config",
            "--require-hashes",
            "--no-python-downloads",
            "--python",
            env_python(env),
            "--link-mode",
            _link_mode(),
            *_index_args(indexes),
        ]
        if len(indexes) > 1:
            # Every artifact is pinned by hash, so taking a file from any allowed index is safe.
            argv += ["--index-strategy", "unsafe-best-match"]
        if offline:
            argv.append("--offline")
        argv.append(requirements)
        _run(argv, what="uv pip sync", timeout=INSTALL_TIMEOUT, on_line=on_line)

    def uninstall(self, env: Path, names: Sequence[str], *, on_line: OnLine | None = None) -> None:
        if names:
            _run(
                [self.uv, "pip", "uninstall", "--no-config", "--python", env_python(env), *names],
                what="uv pip uninstall",
                timeout=VENV_TIMEOUT,
                on_line=on_line,
            )


def _link_mode() -> str:
    return "clone" if sys.platform == "darwin" else "hardlink"


class PipBackend:
    """virtualenv + the env's own pip with --require-hashes --no-deps."""

    name = "pip"

    def create(self, env: Path, python: Path, *, on_line: OnLine | None = None) -> None:
        # --no-download: seed from virtualenv's embedded wheels, so this works offline too.
        _run(
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
    ) -> None:
        if offline:
            raise InstallError(
                "the pip backend cannot install offline", hint="use the uv backend, which reads its cache"
            )
        _run(
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
                *_index_args(indexes),
                "-r",
                requirements,
            ],
            what="pip install",
            timeout=INSTALL_TIMEOUT,
            on_line=on_line,
        )

    def uninstall(self, env: Path, names: Sequence[str], *, on_line: OnLine | None = None) -> None:
        if names:
            _run(
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


BACKENDS = ("uv", "pip")


def choose_backend(name: str | None) -> Backend:
    """`pip` when asked; otherwise uv, falling back to pip when uv's binary cannot run."""
    if name not in (None, "", *BACKENDS):
        raise UsageError(f"unknown installer backend {name!r}", hint=f"choose one of: {', '.join(BACKENDS)}")
    if name == "pip":
        return PipBackend()
    uv = _runnable_uv()
    return UvBackend(uv) if uv else PipBackend()


@functools.cache
def _runnable_uv() -> str | None:
    # Once per process: a CLI run builds at most a few envs.
    path = uv.find()
    if path is None:
        return None
    try:
        proc.run([path, "--version"], timeout=30, what="uv --version")
    except (ToolError, OSError):
        return None
    return path
