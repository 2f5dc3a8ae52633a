"""Builds killed with SIGKILL at several moments, and concurrent syncs, in real child processes.

A gated index serves the local wheels but holds every file download until the test
opens the gate, so a child can be killed at a known point of its build.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from envsync import proc
from envsync.env import inventory, store
from envsync.env.drift import check_lock
from envsync.lock.model import Lock
from envsync.ops.sync import sync
from tests.envhelpers import BASE, PYTHON, imported_versions, make_lock, settings_at
from tests.support.gated_index import GatedIndex
from tests.support.processes import alive, child_env, descendants
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex

DEADLINE = 60.0

CHILD = """
import json, sys
from pathlib import Path
from envsync.lock.model import lock_from_dict
from envsync.settings import Settings
from envsync.ops.sync import sync
cfg = json.loads(Path(sys.argv[1]).read_text())
settings = Settings(home=Path(cfg["home"]), allowed_indexes=(cfg["index"],))
result = sync(lock=lock_from_dict(cfg["lock"]), project=cfg["project"], notebook=Path("n.ipynb"), settings=settings)
print(json.dumps(result.to_dict()), flush=True)
"""


@pytest.fixture
def gated(local_index: LocalIndex) -> Iterator[GatedIndex]:
    index = GatedIndex(local_index.root, armed=True, slow=0.1)
    yield index
    index.stop()


class Children:
    """Child syncs started by a test; each (and anything it started) ends by PID."""

    def __init__(self, tmp: Path, home: Path, index: str, lock: Lock) -> None:
        self.tmp, self.home, self.index, self.lock = tmp, home, index, lock
        self.started: list[Popen[bytes]] = []
        self.descendants: list[int] = []

    def start(self, *, cache: str, project: str = "demo", lock: Lock | None = None) -> Popen[bytes]:
        cfg = self.tmp / f"child-{len(self.started)}.json"
        cfg.write_text(
            json.dumps(
                {
                    "home": str(self.home),
                    "index": self.index,
                    "project": project,
                    "lock": (lock or self.lock).to_dict(),
                }
            )
        )
        # A fresh uv cache per scenario, so every build really downloads through the gate.
        child = proc.spawn([PYTHON, "-c", CHILD, str(cfg)], env=child_env(UV_CACHE_DIR=str(self.tmp / cache)))
        self.started.append(child)
        return child

    def kill9(self, child: Popen[bytes]) -> None:
        """SIGKILL the child alone, as a user's `kill -9` would; its installer may live on."""
        self.descendants += descendants(child.pid)
        child.kill()
        child.wait(timeout=DEADLINE)

    def result(self, child: Popen[bytes]) -> dict[str, object]:
        out, err = child.communicate(timeout=DEADLINE)
        assert child.returncode == 0, err.decode()
        return dict(json.loads(out.decode().strip().splitlines()[-1]))

    def end_all(self) -> None:
        for child in self.started:
            proc.shutdown(child, interrupt_timeout=0, terminate_timeout=3)
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        self.end_orphans()
        assert all(c.poll() is not None for c in self.started)

    def end_orphans(self) -> None:
        """End, by PID, the installers that outlived a killed child."""
        for pid in self.descendants:
            proc.signal_pid(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(alive(pid) for pid in self.descendants), DEADLINE, poll=0.01), (
            "timed out waiting for orphaned installers to end"
        )


@pytest.fixture
def children(tmp_path: Path, gated: GatedIndex, local_index: LocalIndex) -> Iterator[Children]:
    kids = Children(tmp_path, tmp_path / "home", gated.url, make_lock(local_index, url=gated.url))
    yield kids
    kids.end_all()


def _assert_no_half_env_is_ready(home: Path, lock: Lock) -> None:
    """Every env the store would hand out is complete: drift-clean against the lock."""
    settings = settings_at(home)
    for rec in store.ready_envs(settings, lock.fingerprint):
        from envsync.env import drift

        assert drift.check(rec, lock).clean, f"{rec.path} is marked ready but incomplete"


def _env_dirs(home: Path) -> list[Path]:
    envs = home / "envs"
    return [p for p in envs.iterdir() if not p.name.startswith(".")] if envs.exists() else []


def _next_sync_succeeds(children: Children, gated: GatedIndex) -> Path:
    gated.release.set()
    settings = settings_at(children.home, gated.url)
    result = sync(lock=children.lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert result.drift.clean
    assert imported_versions(result.python, ["alpha", "beta"]) == {"alpha": "1.1.0", "beta": "1.0.0"}
    assert check_lock(lock=children.lock, settings=settings).clean
    assert [e.path for e in inventory.list_envs(settings) if e.state == "ready"] == [result.env]
    return result.env


def test_build_killed_after_venv_dir_appears_is_rebuilt(children: Children, gated: GatedIndex) -> None:
    child = children.start(cache="cache-venv")
    assert wait_until(lambda: bool(_env_dirs(children.home)), DEADLINE, poll=0.01), "no env directory in time"
    children.kill9(child)
    assert store.ready_envs(settings_at(children.home), children.lock.fingerprint) == []
    _next_sync_succeeds(children, gated)


def test_build_killed_while_downloading_is_rebuilt(children: Children, gated: GatedIndex) -> None:
    child = children.start(cache="cache-download")
    assert gated.requested.wait(timeout=DEADLINE)
    half = _env_dirs(children.home)
    children.kill9(child)
    assert len(half) == 1 and not (half[0] / store.READY).exists()
    assert store.ready_envs(settings_at(children.home), children.lock.fingerprint) == []
    rebuilt = _next_sync_succeeds(children, gated)
    # The rebuild has a directory of its own: an installer orphaned by the kill may still
    # be writing into the dead one (even re-creating it), which nothing takes as ready.
    assert rebuilt != half[0]
    assert store.read_ready(half[0]) is None
    children.end_orphans()
    settings = settings_at(children.home)
    inventory.gc(settings, older_than_days=365)
    assert _env_dirs(children.home) == [rebuilt]


# With 4 files at 0.1 s each, the early kills land mid-install (uv orphaned and still
# writing into its dead build) and the late ones after the marker; all must hold.
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2, 0.5])
def test_build_killed_at_any_moment_after_download_never_leaves_a_ready_half_env(
    delay: float, children: Children, gated: GatedIndex
) -> None:
    child = children.start(cache=f"cache-late-{delay}")
    assert gated.requested.wait(timeout=DEADLINE)
    gated.release.set()
    time.sleep(delay)
    children.kill9(child)
    _assert_no_half_env_is_ready(children.home, children.lock)
    _next_sync_succeeds(children, gated)


def test_four_syncs_of_one_lock_at_once_build_it_once(children: Children, gated: GatedIndex) -> None:
    kids = [children.start(cache="cache-shared") for _ in range(4)]
    assert gated.requested.wait(timeout=DEADLINE)
    time.sleep(0.3)  # let the other three reach the lock and wait on it
    gated.release.set()
    results = [children.result(k) for k in kids]
    assert len({r["env"] for r in results}) == 1
    assert sorted(r["installer-ran"] for r in results) == [False, False, False, True]
    assert sorted(r["reused"] for r in results) == [False, True, True, True]
    assert len(_env_dirs(children.home)) == 1


def test_different_locks_build_in_parallel(
    children: Children, gated: GatedIndex, local_index: LocalIndex
) -> None:
    blocked = children.start(cache="cache-blocked")  # its downloads wait at the gate
    assert gated.requested.wait(timeout=DEADLINE)
    other = make_lock(local_index, {**BASE, "alpha": "1.0.0"})  # the ungated index
    settings = settings_at(children.home, local_index.url)
    result = sync(lock=other, project="other", notebook=Path("n.ipynb"), settings=settings)
    assert result.installer_ran and result.drift.clean
    assert blocked.poll() is None  # still building the first lock: neither waited for the other
    gated.release.set()
    assert children.result(blocked)["installer-ran"] is True
