"""`envsync launch NB --hosts ...`: kernels asked of the local gateway run on the other hosts.

The launch makes both hosts ready (envsync there, the locked env built by each host's
own user), then serves one kernelspec whose kernels start over SSH. Kernels land on both
hosts and run the locked ipykernel; a host whose env is changed afterwards is refused
at the next start and the other host takes it; Ctrl-C ends every remote kernel.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from tests.support.gateway_client import run_code
from tests.support.hostnotebook import Setup, on_hosts
from tests.support.hosts import Host, ssh
from tests.support.remote_envs import remote_kernels

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.network]

WHERE = "import getpass, os, ipykernel; print(getpass.getuser(), os.environ['KERNEL_ENVSYNC_HOST'], ipykernel.__version__)"


def first_line(child: subprocess.Popen[str], timeout: float) -> str:
    """The launch's first stdout line (its ready JSON), or a failure with what it said on stderr."""
    assert child.stdout is not None and child.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(child.stdout, selectors.EVENT_READ)
        if sel.select(timeout):
            line = child.stdout.readline()
            if line:
                return line
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=60)
    raise AssertionError(f"launch --hosts was not ready in {timeout:.0f} s: {err[-3000:]}")


@pytest.fixture
def launched(setup: Setup) -> Iterator[tuple[dict[str, Any], subprocess.Popen[str]]]:
    argv = [sys.executable, "-m", "envsync", "launch", str(setup.notebook), "--hosts", setup.targets,
            "--ssh-config", str(setup.ssh_config), "--json"]  # fmt: skip
    child = subprocess.Popen(argv, env=setup.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        info = json.loads(first_line(child, timeout=900))
        info["ready_s"] = time.monotonic() - start
        yield info, child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=10)


def start(gw: SimpleNamespace) -> str:
    r = requests.post(f"{gw.url}/api/kernels", json={}, headers={"Authorization": f"token {gw.token}"}, timeout=120)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def stop(gw: SimpleNamespace, kernel_id: str) -> None:
    requests.delete(f"{gw.url}/api/kernels/{kernel_id}", headers={"Authorization": f"token {gw.token}"}, timeout=60)


def gone(hosts: list[Host], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(remote_kernels(h) for h in hosts):
            return True
        time.sleep(0.5)
    return False


def test_kernels_land_on_both_hosts_a_tampered_host_is_refused_and_ctrl_c_ends_them(
    setup: Setup, launched: tuple[dict[str, Any], subprocess.Popen[str]]
) -> None:
    info, child = launched
    gw = SimpleNamespace(url=info["url"], token=info["token"])
    assert info["fingerprint"] == setup.fingerprint and not info["left-out"]
    assert sorted(h["host"] for h in info["hosts"]) == sorted(h.target for h in setup.hosts)
    # The kernelspec clients see names the hosts, not any local path.
    specs = requests.get(f"{gw.url}/api/kernelspecs", headers={"Authorization": f"token {gw.token}"}, timeout=30)
    listed = specs.json()["kernelspecs"][info["kernel"]]["spec"]
    shown = {h["host"]: h["fingerprint"] for h in listed["metadata"]["envsync"]["hosts"]}
    assert shown == {h.target: setup.fingerprint for h in setup.hosts}
    assert listed["argv"] == [] and str(setup.hosts[0].home) not in specs.text

    started = time.monotonic()
    first = start(gw)
    first_s = time.monotonic() - started
    second = start(gw)
    answers = {run_code(gw, k, WHERE).strip() for k in (first, second)}
    locked = importlib.metadata.version("ipykernel")
    assert answers == {f"{h.user} {h.target} {locked}" for h in setup.hosts}
    for k in (first, second):
        stop(gw, k)
    assert gone(setup.hosts)

    victim, other = setup.hosts[1], setup.hosts[0]
    env_dir = next(h["env"] for h in info["hosts"] if h["host"] == victim.target)
    init = f"{env_dir}/lib/python3.11/site-packages/ipykernel/__init__.py"
    assert ssh(victim, f"echo '# edit' >> {init}").returncode == 0
    try:
        kernels = [start(gw) for _ in range(2)]
        assert {run_code(gw, k, WHERE).strip().split()[0] for k in kernels} == {other.user}
    finally:
        repaired = on_hosts(setup, "prepare", "--repair", "--json")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    child.send_signal(signal.SIGINT)
    child.wait(timeout=60)
    assert child.returncode == 0
    assert gone(setup.hosts), "remote kernels outlived the launch"
    print(f"hosts.launch_ready_s {info['ready_s']:.1f} first_remote_kernel_s {first_s:.2f}")
