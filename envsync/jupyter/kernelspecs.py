"""Kernelspecs for envs: write, list, remove, prune. Kernels envsync did not make are never touched.

A kernelspec is ours when its kernel.json has `metadata.envsync`; everything else
(`python3`, a conda kernel, one the user wrote) is left alone by every function here.

Naming, when two locks of one project are in use at once. The kernel is named
`envsync-<project>` so that the notebook's `metadata.kernelspec` is the same on every
collaborator's machine. A gateway reads the kernelspec again at each kernel (re)start,
so rewriting it under a running gateway would switch that gateway's next kernel to
another env. Hence: a sync takes the plain name when it is free, already points at
the same env, or points at an env nobody holds (as a running gateway does: the caller
passes that test in as `held`); otherwise the sync gets `envsync-<project>-<env key>` (e.g.
`envsync-sales-3f2a9c1b7d4e5f60-cp311`), the plain name keeps serving the running
gateway, and the next sync after that gateway ends takes the plain name back.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from envsync.errors import KernelError
from envsync.fsutil import atomic_write_text
from envsync.rules import check_project, is_kernel_name
from envsync.settings import Settings

PREFIX = "envsync-"
_EXACT_MINOR = re.compile(r"==(\d+\.\d+)(?:\.\*)?")

LOCK_TIMEOUT = 60.0  # the section it guards writes two small files

# Does a live process use the env in this directory? (a running gateway holds its env)
Held = Callable[[Path], bool]


class KernelLocation(enum.StrEnum):
    """Which kernels folder a kernelspec is in."""

    ENVSYNC = "envsync"  # the gateway's own folder under envsync's data dir
    USER = "user"  # the user's Jupyter data dir, for local JupyterLab and VS Code


def kernel_name(project: str) -> str:
    return PREFIX + check_project(project)


def user_kernels_dir() -> Path:
    """The user's Jupyter kernels folder, where local JupyterLab and VS Code look."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels"


@dataclass(frozen=True)
class KernelInfo:
    name: str
    path: Path  # the kernelspec folder
    location: KernelLocation
    display_name: str
    python: Path | None
    ours: bool
    fingerprint: str | None = None
    project: str | None = None
    notebook: str | None = None

    @property
    def env_exists(self) -> bool:
        return self.python is not None and self.python.exists()


def display_name(project: str, requires_python: str) -> str:
    """The kernel's display name, from the manifest alone: `sales (Python 3.11, envsync)`.

    Both the kernelspec and the notebook's `metadata.kernelspec` carry it. It never names
    this machine's interpreter: collaborators on other minors in the range would each
    write their own, and Jupyter would rewrite the notebook to match on every open.
    """
    declared = "".join(requires_python.split())
    exact = _EXACT_MINOR.fullmatch(declared)
    python = exact.group(1) if exact else declared
    return f"{project} (Python {python}, envsync)" if python else f"{project} (Python, envsync)"


def kernelspec(
    *, python: Path, requires_python: str, project: str, fingerprint: str, notebook: str
) -> dict[str, Any]:
    """The kernel.json of an envsync kernel."""
    return {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name(project, requires_python),
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {
            "envsync": {"fingerprint": fingerprint, "project": project, "notebook": notebook},
            "debugger": True,
        },
    }


def _read(folder: Path, location: KernelLocation) -> KernelInfo | None:
    try:
        data = json.loads((folder / "kernel.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    meta = data.get("metadata")
    info = meta.get("envsync") if isinstance(meta, dict) else None
    ours = isinstance(info, dict)
    if not isinstance(info, dict):
        info = {}
    argv = data.get("argv")
    python = Path(argv[0]) if isinstance(argv, list) and argv and isinstance(argv[0], str) else None
    return KernelInfo(
        name=folder.name,
        path=folder,
        location=location,
        display_name=str(data.get("display_name", folder.name)),
        python=python,
        ours=ours,
        fingerprint=info.get("fingerprint"),
        project=info.get("project"),
        notebook=info.get("notebook"),
    )


def _locations(settings: Settings, include_user: bool) -> list[tuple[KernelLocation, Path]]:
    out = [(KernelLocation.ENVSYNC, settings.kernels_dir)]
    if include_user:
        out.append((KernelLocation.USER, user_kernels_dir()))
    return out


def _env_of(settings: Settings, python: Path | None) -> Path | None:
    # <envs_dir>/<env dir>/bin/python: the env a kernelspec runs, if it is in our store.
    if python is None:
        return None
    env = python.parent.parent
    return env if env.parent == settings.envs_dir else None


def choose_name(settings: Settings, *, project: str, python: Path, env_key: str, held: Held) -> str:
    """The plain name unless it serves another env that a running process holds (see module doc).

    `env_key` names the env of `python` (the suffix of the other name); `held` tells
    whether a live process uses an env directory.
    """
    plain = kernel_name(project)
    current = _read(settings.kernels_dir / plain, KernelLocation.ENVSYNC)
    if current is None or current.python == python:
        return plain
    other = _env_of(settings, current.python)
    if current.ours and (other is None or not held(other)):
        return plain
    return f"{plain}-{env_key}"


@contextlib.contextmanager
def project_lock(settings: Settings, project: str, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One process at a time chooses the project's kernel name, writes it and holds its env.

    Without it, two syncs of one project with different locks could both see the plain
    name free and both take it. The lock files live in a folder only this user can write.
    """
    folder = settings.state_dir / "kernel-locks"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)
    lock = FileLock(folder / f"{check_project(project)}.lock")
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise KernelError(
            f"another envsync process has been registering the kernel of {project!r} for over {timeout:.0f} s",
            hint="wait for it to finish, or end it and run again",
        ) from exc
    try:
        yield
    finally:
        lock.release()


def write(
    settings: Settings,
    *,
    project: str,
    notebook: str,
    fingerprint: str,
    python: Path,
    requires_python: str,
    env_key: str,
    held: Held,
    register_user: bool = False,
) -> str:
    """Write the project's kernelspec for the env of `python`; return the kernel name used.

    `env_key` and `held` choose the name when the plain one serves another env (`choose_name`).
    """
    name = choose_name(settings, project=project, python=python, env_key=env_key, held=held)
    if not is_kernel_name(name):
        raise KernelError(f"cannot make a kernel name from {name!r}")
    spec = kernelspec(
        python=python,
        requires_python=requires_python,
        project=project,
        fingerprint=fingerprint,
        notebook=notebook,
    )
    text = json.dumps(spec, indent=1) + "\n"
    for location, root in _locations(settings, register_user):
        folder = root / name
        existing = _read(folder, location)
        # A folder without kernel.json is no kernelspec (perhaps another sync's, a moment
        # before its atomic write): only a kernel.json that is not ours is refused.
        if (folder / "kernel.json").exists() and (existing is None or not existing.ours):
            raise KernelError(
                f"a kernel named {name!r} that envsync did not create exists in {root}",
                hint="rename or remove that kernel, or give the notebook another project name",
            )
        if existing is not None and _unchanged(folder / "kernel.json", text):
            continue  # a reuse rewrites nothing (and pays no fsync)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "kernel.json", text)
        except OSError as exc:
            raise KernelError(f"cannot write kernel {name!r} into {root}: {exc.strerror}") from exc
    return name


def _unchanged(path: Path, text: str) -> bool:
    try:
        return path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def list_kernels(settings: Settings, *, include_user: bool = True) -> list[KernelInfo]:
    """Every kernelspec in envsync's folder (and the user's), ours or not; `ours` tells."""
    out = []
    for location, root in _locations(settings, include_user):
        try:
            folders = sorted(p for p in root.iterdir() if p.is_dir())
        except OSError:
            continue
        for folder in folders:
            info = _read(folder, location)
            if info is not None:
                out.append(info)
    return out


def remove(settings: Settings, name: str, *, include_user: bool = True) -> list[Path]:
    """Remove an envsync kernel by name from both folders; refuse one envsync did not create."""
    if not is_kernel_name(name):
        raise KernelError(f"not a kernel name: {name!r}")
    removed, refused = [], []
    for location, root in _locations(settings, include_user):
        folder = root / name
        if not folder.is_dir():
            continue
        info = _read(folder, location)
        if info is None or not info.ours:
            refused.append(folder)
            continue
        shutil.rmtree(folder)
        removed.append(folder)
    if not removed:
        if refused:
            raise KernelError(f"kernel {name!r} was not created by envsync; it is left alone")
        raise KernelError(f"no kernel named {name!r}", hint="`envsync kernels list` shows them")
    return removed


def prune(settings: Settings, *, include_user: bool = True, dry_run: bool = False) -> list[KernelInfo]:
    """Remove envsync kernels whose env no longer exists; return what was (or would be) removed."""
    gone = [k for k in list_kernels(settings, include_user=include_user) if k.ours and not k.env_exists]
    if not dry_run:
        for k in gone:
            shutil.rmtree(k.path, ignore_errors=True)
    return gone
