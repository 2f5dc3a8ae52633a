"""Other hosts made ready for a notebook's kernels: envsync installed there, the locked env built and checked.

For each host, over ssh (`envsync.ssh`), in parallel:

1. the tool: envsync's own files (and the kernel launcher files a remote kernel starts
   from) go to `~/.local/share/envsync-host/<version>-<digest>/` on the host, into a
   private venv of the host's `python3` with envsync's dependencies pinned to the
   versions running here, from the lock's first index. Skipped when that folder is
   complete: its name changes with every change of envsync's files.
2. the env: the notebook (its manifest and lock) goes over stdin and the host's envsync
   runs `sync --json` on it (build or reuse, hash-verified, kernel registered) or
   `check --json`; what comes back is the host's own account of the env's fingerprint,
   Python and drift.

A host that cannot match the lock (no suitable Python, a platform outside the lock's
targets, an index it cannot reach) is reported with the reason and left out.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import tarfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import envsync
from envsync import proc, ssh
from envsync.errors import ToolError
from envsync.ops.project import Project
from envsync.settings import DEFAULT_INDEX, Settings

HOME_DIR = ".local/share/envsync-host"
# envsync's dependencies that its `sync` and `check` import; the Jupyter server stack stays here.
TOOL_DEPENDENCIES = ("uv", "packaging", "tomlkit", "jsonschema", "platformdirs", "filelock", "psutil", "rich")
# What gateway_provisioners' kernel launcher imports beyond the kernel's own env.
LAUNCHER_DEPENDENCIES = ("pycryptodomex",)
PREPARE_TIMEOUT = 1800.0

_INSTALL = r"""
set -eu
T="$HOME/%(home)s/$1"; index=$2; trusted=$3; tool=$4; launcher=$5
mkdir -p "$HOME/%(home)s"
exec 9>"$T.lock"
flock 9 2>/dev/null || true
if [ -f "$T/ready" ]; then cat >/dev/null; echo "present $T"; exit 0; fi
if ! command -v python3 >/dev/null 2>&1; then echo "no python3 on this host" >&2; exit 20; fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "envsync needs Python 3.11 or newer on the host; python3 is $(python3 -V 2>&1)" >&2; exit 21
fi
rm -rf "$T"; mkdir -p "$T/src"
tar -xzf - -C "$T/src"
python3 -m venv "$T/venv"
pip="$T/venv/bin/python -m pip install --disable-pip-version-check --no-input --quiet --index-url $index $trusted"
$pip $tool >&2
$pip --target "$T/src/launcher/lib" $launcher >&2
"$T/venv/bin/python" -c 'import site, sys; open(site.getsitepackages()[0] + "/envsync-host.pth", "w").write(sys.argv[1] + "\n")' "$T/src"
touch "$T/ready"; echo "installed $T"
"""

# The notebook arrives on stdin; the indexes this machine allowed for its lock are allowed there too.
_WITH_NOTEBOOK = (
    'T="$HOME/%(home)s/$1"; nb="$T/notebooks/$2.ipynb"; allowed=$3; shift 3; mkdir -p "$T/notebooks"; '
    'cat >"$nb.part" && mv "$nb.part" "$nb" && '
    'ENVSYNC_ALLOWED_INDEXES="$allowed" exec "$T/venv/bin/python" -m envsync "$@" "$nb"'
)


@dataclass(frozen=True)
class HostState:
    """What one host said about the notebook's env, or why it could not say."""

    target: ssh.Target
    ok: bool
    reason: str = ""  # why the host was left out
    fingerprint: str | None = None
    python_version: str | None = None
    python: str | None = None  # the env's interpreter on the host
    env: str | None = None
    kernel: str | None = None
    drift: dict[str, Any] = field(default_factory=dict)
    tool: str = ""  # the envsync folder on the host, for the kernel launcher
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return self.ok and bool(self.drift.get("clean"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": str(self.target),
            "ok": self.ok,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "python-version": self.python_version,
            "python": self.python,
            "env": self.env,
            "kernel": self.kernel,
            "drift": self.drift,
            "tool": self.tool,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Tool:
    """envsync's files as the hosts get them."""

    ident: str  # `<version>-<digest>`: the host folder's name
    archive: bytes  # a gzipped tar of `envsync/` and `launcher/`
    pins: tuple[str, ...]  # `name==version` of each dependency, as installed here
    launcher_pins: tuple[str, ...]


def tool(launcher_files: dict[str, str] | None = None) -> Tool:
    """envsync's own package (without byte code) and the launcher files, packed once a run."""
    package = Path(envsync.__file__).parent
    files = {
        f"envsync/{p.relative_to(package).as_posix()}": p.read_bytes()
        for p in sorted(package.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    # The manifest schema: inside the package when installed from a wheel, beside it in a checkout.
    for schemas in (package / "schemas", package.parent / "schemas"):
        files.update({f"envsync/schemas/{p.name}": p.read_bytes() for p in sorted(schemas.glob("*.json"))})
    files.update({f"launcher/{name}": text.encode() for name, text in (launcher_files or {}).items()})
    digest = hashlib.sha256()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name, data in sorted(files.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    pins = tuple(f"{d}=={importlib.metadata.version(d)}" for d in TOOL_DEPENDENCIES)
    launcher_pins = tuple(_pin(d) for d in LAUNCHER_DEPENDENCIES)
    return Tool(f"{envsync.__version__}-{digest.hexdigest()[:16]}", buf.getvalue(), pins, launcher_pins)


def _pin(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def prepare(
    project: Project,
    notebook_bytes: bytes,
    targets: Sequence[ssh.Target],
    options: ssh.SshOptions,
    settings: Settings,
    *,
    build: bool = True,
    repair: bool = False,
    on_step: Callable[[ssh.Target, str], None] | None = None,
    launcher_files: dict[str, str] | None = None,
) -> list[HostState]:
    """Make every host ready (`build`) or only ask how its env compares (`build=False`), in parallel.

    A host's env that differs from the lock is left as it is and reported, unless `repair`.
    """
    packed = tool(launcher_files)
    lock = project.manifest.lock
    indexes = list(dict.fromkeys(p.index or DEFAULT_INDEX for p in lock.packages)) if lock else []
    index = indexes[0] if indexes else DEFAULT_INDEX
    allowed = " ".join(u for u in indexes if u != DEFAULT_INDEX and settings.index_allowed(u))
    say = on_step or (lambda _t, _s: None)
    name = remote_notebook_name(project.manifest.project, notebook_bytes)

    def one(target: ssh.Target) -> HostState:
        start = time.monotonic()
        try:
            say(target, "installing envsync" if build else "checking")
            folder = _install(target, options, packed, index)
            say(target, "building or reusing the environment" if build else "checking the environment")
            argv = (["sync", "--json", *(["--repair"] if repair else [])]) if build else ["check", "--json"]
            data = _remote_json(target, options, packed, name, allowed, argv, notebook_bytes)
        except ToolError as exc:
            return HostState(target, ok=False, reason=exc.message, seconds=time.monotonic() - start)
        return _state(target, data, folder, build=build, seconds=time.monotonic() - start)

    with ThreadPoolExecutor(max_workers=min(8, len(targets)) or 1) as pool:
        return list(pool.map(one, targets))


def remote_notebook_name(project: str, notebook: bytes) -> str:
    """The notebook's file name on a host (without `.ipynb`): the project and the content's hash."""
    return f"{project}-{hashlib.sha256(notebook).hexdigest()[:16]}"


def _install(target: ssh.Target, options: ssh.SshOptions, packed: Tool, index: str) -> str:
    trusted = f"--trusted-host {_host_of(index)}" if index.startswith("http://") else ""
    script = _INSTALL % {"home": HOME_DIR}
    argv = ssh.command(
        target,
        [
            "sh",
            "-c",
            script,
            "envsync-host",
            packed.ident,
            index,
            trusted,
            " ".join(packed.pins),
            " ".join(packed.launcher_pins),
        ],
        options,
    )
    out = _ssh_run(argv, target, "installing envsync", stdin_data=packed.archive).stdout.strip().splitlines()
    # `present <folder>` or `installed <folder>`: the folder on the host, for the kernel launcher.
    return out[-1].split(" ", 1)[1] if out and " " in out[-1] else ""


def _remote_json(
    target: ssh.Target,
    options: ssh.SshOptions,
    packed: Tool,
    name: str,
    allowed: str,
    argv: list[str],
    notebook: bytes,
) -> dict[str, Any]:
    script = _WITH_NOTEBOOK % {"home": HOME_DIR}
    cmd = ssh.command(
        target, ["sh", "-c", script, "envsync-host", packed.ident, name, allowed, *argv], options
    )
    result = _ssh_run(cmd, target, argv[0], stdin_data=notebook, check=False)
    try:
        data = json.loads(result.stdout or "null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ToolError(f"{argv[0]} on {target} failed: {_reason(result.stderr)}", stderr=result.stderr)
    return data


def _ssh_run(
    argv: list[str], target: ssh.Target, what: str, *, stdin_data: bytes, check: bool = True
) -> proc.Result:
    try:
        result = proc.run(
            argv, timeout=PREPARE_TIMEOUT, what=f"ssh {target}", check=False, stdin_data=stdin_data
        )
    except ToolError as exc:
        raise ToolError(f"{what} on {target}: {exc.message}") from exc
    if result.returncode == 255:
        raise ToolError(f"cannot reach {target} over ssh: {_reason(result.stderr)}", stderr=result.stderr)
    if check and result.returncode != 0:
        raise ToolError(f"{what} on {target} failed: {_reason(result.stderr)}", stderr=result.stderr)
    return result


def _state(
    target: ssh.Target, data: dict[str, Any], folder: str, *, build: bool, seconds: float
) -> HostState:
    drift = data.get("drift", data) if build else data
    if not isinstance(drift, dict):
        drift = {}
    return HostState(
        target,
        ok=True,
        fingerprint=drift.get("fingerprint"),
        python_version=str(data.get("python-version") or drift.get("python") or "") or None,
        python=data.get("python") if build else None,
        env=str(data.get("env") or drift.get("env") or "") or None,
        kernel=data.get("kernel"),
        drift=drift,
        tool=folder,
        seconds=seconds,
    )


def _reason(stderr: str) -> str:
    """The host's own words: its `ERROR` line (envsync) or the last line ssh or the script wrote."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR ") for line in lines if line.startswith("ERROR ")]
    return (errors or lines or ["no output"])[-1]


def _host_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]


def notebook_bytes(path: Path) -> bytes:
    """The notebook as it is on disk: what the hosts get."""
    with open(path, "rb") as fh:
        return fh.read()
