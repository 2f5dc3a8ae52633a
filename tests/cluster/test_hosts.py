"""`envsync hosts prepare` and `hosts check` against two real SSH hosts (network namespaces).

The notebook is locked here against an index of real wheels (ipykernel and its dependencies,
and what envsync itself needs on a host) served on the hosts' gateway address; each host
gets envsync installed by `hosts prepare`, builds the env as its own user, and answers
`hosts check` with its own fingerprint and drift.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from envsync.ops.hosts import LAUNCHER_DEPENDENCIES, TOOL_DEPENDENCIES
from tests.support.hostindex import download_wheels, serve_wheels
from tests.support.hosts import Host, ssh
from tests.support.processes import child_env

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.network]


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


@pytest.fixture(scope="module")
def setup(hosts: list[Host], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("hosts-nb")
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


def test_prepare_builds_the_locked_env_on_every_host_and_a_second_run_reuses_it(setup: Setup) -> None:
    start = time.monotonic()
    cold = on_hosts(setup, "prepare", "--json")
    cold_s = time.monotonic() - start
    assert cold.returncode == 0, cold.stdout + cold.stderr
    states = by_host(cold.stdout)
    assert set(states) == {h.target for h in setup.hosts}
    for host in setup.hosts:
        state = states[host.target]
        assert state["ok"] and state["fingerprint"] == setup.fingerprint, state
        assert state["drift"]["clean"]  # type: ignore[index]
        assert str(state["python"]).startswith(str(host.home)), state  # the host user's own env
        # The host's own interpreter runs the locked ipykernel.
        version = ssh(host, f"{state['python']} -c 'import ipykernel; print(ipykernel.__version__)'")
        assert version.stdout.strip() == importlib.metadata.version("ipykernel"), version.stderr
    start = time.monotonic()
    warm = on_hosts(setup, "prepare", "--json")
    warm_s = time.monotonic() - start
    assert warm.returncode == 0, warm.stderr
    assert all(s["ok"] for s in by_host(warm.stdout).values())
    print(f"hosts.prepare_two_hosts_s: cold {cold_s:.1f} warm {warm_s:.1f}")


def test_check_matches_then_names_a_tampered_host_with_exit_3(setup: Setup) -> None:
    prepared = on_hosts(setup, "prepare", "--json")
    assert prepared.returncode == 0, prepared.stderr
    checked = on_hosts(setup, "check")
    assert checked.returncode == 0, checked.stderr
    assert "2 of 2 hosts in sync" in checked.stderr and checked.stdout.count("in sync") == 2
    victim = setup.hosts[1]
    env_dir = by_host(prepared.stdout)[victim.target]["env"]
    edited = ssh(
        victim, f"f=$(ls {env_dir}/lib/python3.11/site-packages/ipykernel/__init__.py) && echo '# edit' >> $f"
    )
    assert edited.returncode == 0, edited.stderr
    checked = on_hosts(setup, "check", "--json")
    assert checked.returncode == 3, checked.stderr
    states = by_host(checked.stdout)
    assert states[setup.hosts[0].target]["drift"]["clean"]  # type: ignore[index]
    drift = states[victim.target]["drift"]
    assert not drift["clean"] and [d["name"] for d in drift["differences"]] == ["ipykernel"]  # type: ignore[index]
    repaired = ssh(victim, f"sed -i '$ d' {env_dir}/lib/python3.11/site-packages/ipykernel/__init__.py")
    assert repaired.returncode == 0


def test_a_host_that_cannot_be_reached_is_left_out_with_the_reason(setup: Setup) -> None:
    gone = f"{setup.hosts[0].user}@{setup.hosts[0].address}:2"  # nothing listens on port 2
    result = on_hosts(setup, "prepare", "--json", hosts=f"{setup.hosts[0].target},{gone}")
    assert result.returncode == 3, result.stderr
    states = by_host(result.stdout)
    assert states[setup.hosts[0].target]["ok"]
    assert not states[gone]["ok"] and "cannot reach" in str(states[gone]["reason"])


def test_a_bad_host_spec_is_one_usage_line(setup: Setup) -> None:
    result = envsync(setup, "hosts", "check", str(setup.notebook), "--hosts=u@h,-oProxyCommand=x")
    assert result.returncode == 2
    assert result.stderr.startswith("ERROR not a host to reach over ssh: '-oProxyCommand=x'")
