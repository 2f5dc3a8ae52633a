"""A notebook locked against real wheels served where the test hosts reach them, and envsync runs on it."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from envsync.ops.hosts import LAUNCHER_DEPENDENCIES, TOOL_DEPENDENCIES
from tests.support.hostindex import download_wheels, serve_wheels
from tests.support.hosts import Host
from tests.support.processes import child_env


@dataclass(frozen=True)
class Setup:
    notebook: Path
    env: dict[str, str]
    ssh_config: Path
    fingerprint: str
    hosts: list[Host]

    @property
    def targets(self) -> str:
        return ",".join(h.target for h in self.hosts)


def envsync(setup: Setup, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envsync", *args],
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def locked_notebook(hosts: list[Host], work: Path) -> Iterator[Setup]:
    """A notebook locked (ipykernel) against an index of real wheels on the hosts' gateway address."""
    pins = [f"{d}=={importlib.metadata.version(d)}" for d in (*TOOL_DEPENDENCIES, "ipykernel")]
    wheels = work / "wheels"
    wheels.mkdir()
    # ipykernel's macOS and Windows dependencies are part of the lock's resolution, though never installed here.
    for folder in (
        download_wheels([*pins, *LAUNCHER_DEPENDENCIES]),
        download_wheels(["appnope", "colorama", "cffi"]),
    ):
        for wheel in folder.glob("*.whl"):
            (wheels / wheel.name).symlink_to(wheel)
    index = serve_wheels(wheels, work / "index", hosts[0].gateway)
    try:
        env = child_env(ENVSYNC_HOME=str(work / "home"), ENVSYNC_ALLOWED_INDEXES=index.url)
        config = work / "ssh_config"
        config.write_text(
            "".join(
                f"Host {h.address}\n  IdentityFile {h.key}\n  UserKnownHostsFile {h.known_hosts_file}\n"
                "  StrictHostKeyChecking yes\n  KexAlgorithms curve25519-sha256\n"
                for h in hosts
            )
        )
        nb = work / "remote.ipynb"
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "envsync",
                "init",
                str(nb),
                "--python",
                "3.11",
                "--environment",
                "linux-x86_64",
                "--index",
                index.url,
                "--json",
                f"ipykernel=={importlib.metadata.version('ipykernel')}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert made.returncode == 0, made.stderr
        lock = json.loads(nb.read_text())["metadata"]["envsync"]["lock"]
        yield Setup(nb, env, config, lock["tool"]["envsync"]["fingerprint"], hosts)
    finally:
        index.stop()


def on_hosts(
    setup: Setup, action: str, *extra: str, hosts: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`envsync hosts ACTION NB --hosts ... --ssh-config ... EXTRA`."""
    targets = hosts or setup.targets
    return envsync(
        setup,
        "hosts",
        action,
        str(setup.notebook),
        "--hosts",
        targets,
        "--ssh-config",
        str(setup.ssh_config),
        *extra,
    )


def by_host(out: str) -> dict[str, dict[str, object]]:
    return {h["host"]: h for h in json.loads(out)["hosts"]}
