"""One run's shared state: the work folder, the reference notebook, envsync's home, the peers' tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from benchmarks import reference
from benchmarks.common import BIN, child_env, log, run, tool_venv, version_of
from envsync.env import store
from envsync.settings import Settings


@dataclass
class Context:
    work: Path
    reps: int
    quick: bool
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home)

    def env(self, **extra: str) -> dict[str, str]:
        return child_env({"ENVSYNC_HOME": str(self.home), **extra})

    @cached_property
    def ref(self) -> reference.Reference:
        log("resolving the reference lock (public index)")
        self.work.mkdir(parents=True, exist_ok=True)
        return reference.build(self.work)

    def envsync(self, *args: str | Path, **extra: str) -> None:
        run([BIN / "envsync", *map(str, args)], env=self.env(**extra))
        settle(self.home)

    def delete_ref_envs(self) -> None:
        """Take the reference lock's envs out of envsync's store (set aside, see `set_aside`)."""
        key = store.env_key(self.ref.lock.fingerprint, self.ref.interp.tag)
        for path in store.dirs_of(self.settings, key):
            self.set_aside(path)

    def set_aside(self, path: Path) -> None:
        """Move `path` out of the way; it is deleted with the work folder once every figure is taken.

        A build must not follow a mass delete: on ext4 without a journal, creating a file
        skips every inode freed in the last minute or more (the kernel's `recently_deleted`
        check), and a build right after deleting another env's 12,000 files took several
        times as long as the same build a minute later. Deleting between rounds would time
        the deletes, in whichever order the variants happen to run.
        """
        if not path.exists():
            return
        aside = self.work / "aside"
        aside.mkdir(exist_ok=True)
        path.rename(aside / f"{len(list(aside.iterdir()))}-{path.name}")

    def ref_env(self) -> Path:
        """The reference lock's env, built by `envsync sync` when missing."""
        ready = store.ready_envs(self.settings, self.ref.lock.fingerprint)
        if not ready:
            self.envsync("sync", self.ref.notebook)
            ready = store.ready_envs(self.settings, self.ref.lock.fingerprint)
        return ready[0].path

    def tool(self, name: str) -> Path:
        """The console script `name` of a peer, installed from PyPI into a throwaway venv."""
        where = self.work / "tools" / name
        if not (where / "bin" / name).exists():
            log(f"installing {name} into a throwaway venv")
            tool_venv(where, [name])
            self.versions[name] = version_of([where / "bin" / name, "--version"])
        return where / "bin" / name


def settle(home: Path, deadline_s: float = 900) -> float:
    """Wait until no background bytecode compile of an env under `home` runs; seconds waited."""
    import time

    import psutil

    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        busy = False
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if any("compileall" in part for part in cmd) and any(str(home) in part for part in cmd):
                busy = True
                break
        if not busy:
            return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError("a background compile still runs after the deadline")
