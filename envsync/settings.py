"""Settings are built once (CLI > environment > defaults) and handed down; never global."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INDEX = "https://pypi.org/simple"
DEFAULT_ENVIRONMENTS = (
    "linux-x86_64",
    "linux-aarch64",
    "macos-arm64",
    "macos-x86_64",
    "windows-x86_64",
)
# The kernel's own packages are locked with the user's, so the kernel is identical everywhere.
KERNEL_REQUIREMENTS = ("ipykernel",)


@dataclass(frozen=True)
class Settings:
    """Where envsync keeps things and which index and backend it may use."""

    home: Path
    backend: str = "uv"
    allowed_indexes: tuple[str, ...] = ()
    verbose: bool = False
    offline: bool = False

    @property
    def envs_dir(self) -> Path:
        return self.home / "envs"

    @property
    def jupyter_data_dir(self) -> Path:
        """envsync's own Jupyter data dir: the gateway looks for kernelspecs here only."""
        return self.home / "jupyter"

    @property
    def kernels_dir(self) -> Path:
        return self.jupyter_data_dir / "kernels"

    @property
    def state_dir(self) -> Path:
        """What this machine last ran per project, running gateways, allowed indexes."""
        return self.home / "state"

    @property
    def runtime_dir(self) -> Path:
        return self.home / "run"

    def index_allowed(self, url: str) -> bool:
        """The default index is always allowed; any other only when this machine said so."""
        norm = normalize_index(url)
        if norm == normalize_index(DEFAULT_INDEX):
            return True
        return norm in {normalize_index(u) for u in self.allowed_indexes}

    def require_index_allowed(self, url: str) -> None:
        """Refuse an index this machine has not allowed, saying how to allow it."""
        if not self.index_allowed(url):
            from envsync.errors import IndexNotAllowedError

            raise IndexNotAllowedError(
                f"this notebook uses the package index {url}, which this machine has not allowed",
                hint=f"if you trust it: `envsync index allow {url}` (or set ENVSYNC_ALLOWED_INDEXES)",
            )


def normalize_index(url: str) -> str:
    return url.strip().rstrip("/")


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("ENVSYNC_HOME"):
        return Path(env["ENVSYNC_HOME"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("envsync", appauthor=False))


def load_settings(
    *,
    home: Path | None = None,
    backend: str | None = None,
    verbose: bool = False,
    offline: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from explicit values, then ENVSYNC_* variables, then defaults."""
    env = os.environ if environ is None else environ
    root = home or default_home(env)
    allowed = [u for u in env.get("ENVSYNC_ALLOWED_INDEXES", "").split() if u]
    allowed += _read_allowed_file(root / "state" / "allowed-indexes.txt")
    return Settings(
        home=root,
        backend=backend or env.get("ENVSYNC_BACKEND", "uv"),
        allowed_indexes=tuple(dict.fromkeys(allowed)),
        verbose=verbose,
        offline=offline or env.get("ENVSYNC_OFFLINE", "") not in ("", "0"),
    )


def _read_allowed_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def allow_index(settings: Settings, url: str) -> Path:
    """Remember on this machine that `url` may be used as a package index."""
    from envsync.fsutil import atomic_write_text

    path = settings.state_dir / "allowed-indexes.txt"
    current = _read_allowed_file(path)
    if normalize_index(url) not in {normalize_index(u) for u in current}:
        current.append(normalize_index(url))
    atomic_write_text(path, "".join(f"{u}\n" for u in current))
    return path
