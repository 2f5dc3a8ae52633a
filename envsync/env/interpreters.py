"""Finding an installed Python for a lock, and what that Python says about itself."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from envsync import proc, uv
from envsync.errors import InterpreterNotFoundError, ToolError
from envsync.lock.targets import parse_requires_python, pythons_in_range

if TYPE_CHECKING:
    from envsync.settings import Settings

# Run by the interpreter itself: the PEP 508 marker values (as packaging's
# default_environment() computes them) and the tag that names its envs. Standard
# library only, since the interpreter may have nothing else.
_DESCRIBE = """
import json, os, platform, sys
def full(info):
    v = "{0.major}.{0.minor}.{0.micro}".format(info)
    if info.releaselevel != "final":
        v += info.releaselevel[0] + str(info.serial)
    return v
impl = sys.implementation
markers = {
    "implementation_name": impl.name,
    "implementation_version": full(impl.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
threaded = "t" if not getattr(sys, "_is_gil_enabled", lambda: True)() else ""
print(json.dumps({
    "markers": markers,
    "executable": sys.executable,
    "version": platform.python_version(),
    "tag": "{}{}{}{}".format({"cpython": "cp", "pypy": "pp"}.get(impl.name, impl.name),
                             sys.version_info[0], sys.version_info[1], threaded),
}))
"""


@dataclass(frozen=True)
class Interpreter:
    """An installed Python: where it is, its version, env tag (`cp311`) and marker values."""

    path: Path
    version: str
    tag: str
    marker_env: dict[str, str] = field(default_factory=dict)

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def cache_file(settings: Settings) -> Path:
    """Where the interpreter chosen for each requires-python range is remembered."""
    return settings.state_dir / "interpreters.json"


def describe(python: Path, *, timeout: float = 60.0) -> Interpreter:
    """Ask `python` for its version, tag and marker environment (one subprocess)."""
    try:
        res = proc.run([python, "-I", "-c", _DESCRIBE], timeout=timeout, what=f"{python}")
        data = json.loads(res.stdout)
    except (ToolError, ValueError) as exc:
        raise InterpreterNotFoundError(
            f"cannot run the Python interpreter at {python}", detail=str(exc)
        ) from exc
    return Interpreter(
        path=Path(python),
        version=str(data["version"]),
        tag=str(data["tag"]),
        marker_env={str(k): str(v) for k, v in data["markers"].items()},
    )


def find(
    requires_python: str,
    *,
    request: str | None = None,
    cache: Path | None = None,
    timeout: float = 60.0,
) -> Interpreter:
    """An installed CPython satisfying `requires_python` (and `request`, e.g. "3.12"); never downloads.

    uv's discovery is used when uv runs (it knows pyenv, the registry and its own
    managed Pythons); otherwise `pythonX.Y` on PATH and envsync's own interpreter.
    With `cache` (a JSON file), the answer is remembered per range and reused while
    that interpreter's file is unchanged: discovery costs 100-200 ms where pyenv shims
    sit on PATH, most of a warm build. A Python installed later is not preferred over
    the remembered one; any Python in the range is a valid choice.
    """
    slot = f"{requires_python}|{request or ''}"
    hit = _cached(cache, slot) if cache else None
    if hit is not None:
        return hit
    found = _find(requires_python, request, timeout)
    if cache:
        _remember(cache, slot, found)
    return found


def _stat_id(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _cached(cache: Path, slot: str) -> Interpreter | None:
    try:
        entry = json.loads(cache.read_text(encoding="utf-8"))[slot]
        found = Interpreter(Path(entry["path"]), entry["version"], entry["tag"], dict(entry["marker_env"]))
        if entry["stat"] is None or entry["stat"] != _stat_id(found.path):
            return None  # upgraded in place, or gone: ask again
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found


def _remember(cache: Path, slot: str, found: Interpreter) -> None:
    from envsync.fsutil import atomic_write_text

    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[slot] = {
        "path": str(found.path),
        "version": found.version,
        "tag": found.tag,
        "marker_env": found.marker_env,
        "stat": _stat_id(found.path),
    }
    try:
        atomic_write_text(cache, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # only a cache


def _find(requires_python: str, request: str | None, timeout: float) -> Interpreter:
    spec = parse_requires_python(requires_python)
    minors = pythons_in_range(requires_python)
    wanted = str(request) if request else (str(spec) or ">=3")
    if wanted.startswith("-"):
        raise InterpreterNotFoundError(f"not a Python version or path: {wanted!r}")
    path = _uv_find(wanted, timeout) if uv.find() else _path_find(minors, request)
    found = describe(path, timeout=timeout) if path else None
    if found is None or not spec.contains(found.version, prereleases=True):
        needed = ", ".join(minors)
        asked = f" and {request!r}" if request else ""
        seen = f" (found {found.version} at {found.path}, outside the range)" if found else ""
        raise InterpreterNotFoundError(
            f"no installed Python satisfies requires-python {requires_python!r}{asked}: "
            f"this lock needs CPython {needed}{seen}",
            hint=f"install one (for example `uv python install {minors[-1]}`) and run again",
        )
    if not found.tag.startswith("cp"):
        raise InterpreterNotFoundError(
            f"the interpreter at {found.path} is {found.tag}, but locks are made for CPython",
            hint="install CPython, or name one with --python",
        )
    return found


def _uv_find(wanted: str, timeout: float) -> Path | None:
    argv = [*uv.command("python", "find"), "--system", "--no-project", wanted]
    # A neutral cwd, --no-project and --system keep a nearby .venv, pyproject.toml or
    # .python-version from choosing for us; the request alone decides.
    with tempfile.TemporaryDirectory(prefix="envsync-find-") as cwd:
        try:
            res = proc.run(
                argv,
                cwd=Path(cwd),
                timeout=timeout,
                check=False,
                what="uv python find",
            )
        except ToolError:
            return None
    out = res.stdout.strip()
    if res.returncode != 0 or not out:
        return None
    return Path(out.splitlines()[-1])


def _path_find(minors: list[str], request: str | None) -> Path | None:
    if request and (os.sep in request or request.startswith(".")):
        return Path(request)
    order = [request] if request else list(reversed(minors))
    for minor in order:
        hit = shutil.which(f"python{minor}")
        if hit:
            return Path(hit)
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return Path(sys.executable) if ours in (order if request else minors) else None
