"""The installers envsync can build an env with, by name: uv (default) and pip.

Each lives in its own module behind the `Installer` protocol (`base.py`); adding one
is a module and a line in `INSTALLERS`. The CLI's `--backend` choices come from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from envsync.env.installers.base import (
    Installer,
    ProgressUpdate,
    check_index_url,
    env_python,
)
from envsync.env.installers.pip import PipInstaller
from envsync.env.installers.uv import UvInstaller, runnable_binary
from envsync.errors import UsageError

__all__ = [
    "DEFAULT",
    "INSTALLERS",
    "Installer",
    "PipInstaller",
    "ProgressUpdate",
    "UvInstaller",
    "check_index_url",
    "choose",
    "env_python",
    "get",
    "names",
]

INSTALLERS: Mapping[str, Callable[[], Installer]] = {
    "uv": UvInstaller,
    "pip": PipInstaller,
}
DEFAULT = "uv"


def names() -> list[str]:
    """The installer names `--backend` accepts, the default first."""
    return list(INSTALLERS)


def get(name: str) -> Installer:
    """The installer called `name`; UsageError (exit 2) for a name no installer has."""
    make = INSTALLERS.get(name)
    if make is None:
        raise UsageError(
            f"unknown installer backend {name!r}", hint=f"choose one of: {', '.join(INSTALLERS)}"
        )
    return make()


def choose(name: str | None) -> Installer:
    """`name` when asked for a non-default installer; otherwise uv, falling back to pip when uv's binary cannot run."""
    if name and name != DEFAULT:
        return get(name)
    binary = runnable_binary()
    return UvInstaller(binary) if binary else PipInstaller()
