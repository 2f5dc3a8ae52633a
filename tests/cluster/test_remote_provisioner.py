"""envsync's SSH kernel provisioner (envsync.gateway.remote) against real SSH hosts.

Two hosts of tests/support/hosts.py get an ipykernel env and the launcher folder by hand
(tests/support/remote_envs.py); a gateway started as envsync starts it serves a kernelspec
whose provisioner config lists them. Kernels must land on both hosts, end on the host when
they are deleted or the gateway dies, and no client text may pick a host or reach a shell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from envsync.gateway import process as gateway
from envsync.gateway.remote import launcher_files, reap
from envsync.gateway.spec import GatewaySpec
from tests.support.gateway_client import auth, run_code
from tests.support.hostindex import download_wheels, serve_wheels
from tests.support.hosts import Host, ssh
from tests.support.processes import alive, children_of, kill_pids
from tests.support.remote_envs import REQUIREMENTS, prepare_hosts, remote_kernels, write_kernelspec
from tests.support.wait import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KERNEL = "envsync-remote"
WHO = "import getpass, os; print(getpass.getuser(), os.environ['KERNEL_ENVSYNC_HOST'])"


@pytest.fixture(scope="module")
def entries(hosts: list[Host], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Each host's entry for the provisioner config, its env and launcher made."""
    index = serve_wheels(
        download_wheels(list(REQUIREMENTS)), tmp_path_factory.mktemp("idx"), hosts[0].gateway
    )
    try:
        yield prepare_hosts(hosts, index)
    finally:
        index.stop()


def config_for(hosts: list[Host], entries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "hosts": entries,
        "known_hosts": str(hosts[0].known_hosts_file),
        "connect_timeout": 3,
        "launch_timeout": 40,
        **extra,
    }


@contextlib.contextmanager
def serving(tmp_path: Path, config: dict[str, Any]) -> Iterator[gateway.RunningGateway]:
    data = tmp_path / f"jupyter-{secrets.token_hex(3)}"
    write_kernelspec(data, KERNEL, config)
    gw = gateway.start(GatewaySpec(KERNEL, data))
    try:
        yield gw
    finally:
        pids = children_of(gw.pid)
        if alive(gw.pid):
            gateway.stop(gw)
        kill_pids([p for p in pids if alive(p)])


def post(gw: gateway.RunningGateway, env: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{gw.url}/api/kernels", json={"env": env or {}}, headers=auth(gw), timeout=60)


def started(gw: gateway.RunningGateway, env: dict[str, str] | None = None) -> str:
    r = post(gw, env)
    assert r.status_code == 201, f"{r.status_code} {r.text}\n{gateway.log_tail(gw.log_path, 30)}"
    return str(r.json()["id"])


def where(gw: gateway.RunningGateway, kernel_id: str) -> str:
    """The kernel's user and host entry, as it sees them."""
    return run_code(gw, kernel_id, WHO).strip()


def delete(gw: gateway.RunningGateway, kernel_id: str) -> None:
    r = requests.delete(f"{gw.url}/api/kernels/{kernel_id}", headers=auth(gw), timeout=60)
    assert r.status_code == 204, r.text


def none_left(hosts: list[Host], timeout: float = 8.0) -> bool:
    return wait_until(lambda: all(not remote_kernels(h) for h in hosts), timeout=timeout, poll=0.3)


def test_launcher_files_are_patched_upstream_files() -> None:
    files = launcher_files()
    assert set(files) == {"launch_ipykernel.py", "server_listener.py"}
    launcher = files["launch_ipykernel.py"]
    assert "ENVSYNC_LAUNCHER_PATH" in launcher and "signal.SIGCHLD" in launcher
    compile(launcher, "launch_ipykernel.py", "exec")
    assert "from Cryptodome" in files["server_listener.py"]


def test_round_robin_uses_both_hosts_and_delete_ends_the_remote_kernels(
    hosts: list[Host], entries: list[dict[str, Any]], tmp_path: Path
) -> None:
    with serving(tmp_path, config_for(hosts, entries)) as gw:
        kernels = [started(gw) for _ in range(2)]
        seen = {where(gw, k) for k in kernels}
        assert seen == {f"{h.user} {h.target}" for h in hosts}
        env = run_code(
            gw, kernels[0], "import os, sys; print(os.environ['ENVSYNC_SPEC_VALUE']); print(sys.path)"
        )
        assert env.startswith("literal $(not expanded) `nor this`\n")
        assert env.index("site-packages") < env.index("launcher/lib")  # appended, not ahead of the env
        assert all(remote_kernels(h) for h in hosts)  # the kernel, and its listener forked from it
        models = requests.get(f"{gw.url}/api/kernels", headers=auth(gw), timeout=10).json()
        assert {m["id"] for m in models} == set(kernels)
        t0 = time.monotonic()
        for k in kernels:
            delete(gw, k)
        assert none_left(hosts, timeout=5), [remote_kernels(h) for h in hosts]
        assert time.monotonic() - t0 < 15


def test_least_connection_fills_the_host_with_fewest_kernels(
    hosts: list[Host], entries: list[dict[str, Any]], tmp_path: Path
) -> None:
    with serving(tmp_path, config_for(hosts, entries, load_balancing="least-connection")) as gw:
        first, second = started(gw), started(gw)
        placed = {k: where(gw, k) for k in (first, second)}
        assert len(set(placed.values())) == 2
        delete(gw, first)
        third = started(gw)
        assert where(gw, third) == placed[first]  # the host left with no kernel
        fourth = started(gw)
        assert {where(gw, fourth), where(gw, third)} == set(placed.values())
    assert none_left(hosts)


def test_client_cannot_pick_a_host_nor_reach_the_remote_shell(
    hosts: list[Host], entries: list[dict[str, Any]], tmp_path: Path
) -> None:
    marker = f"/tmp/envsync-injected-{secrets.token_hex(4)}"
    username = f"x$(touch {marker})`touch {marker}`'; touch {marker}; '\"; touch {marker}"
    subnet = hosts[0].address.rsplit(".", 1)[0]
    with serving(tmp_path, config_for(hosts, entries)) as gw:
        kernel = started(gw, {"KERNEL_REMOTE_HOST": f"{subnet}.250", "KERNEL_USERNAME": username})
        said = run_code(
            gw,
            kernel,
            "import os; print(os.environ['KERNEL_USERNAME']); print(os.environ.get('KERNEL_REMOTE_HOST'))",
        )
        assert said == f"{username}\nNone\n"
        assert where(gw, kernel).split()[1] in {h.target for h in hosts}
        for host in hosts:
            assert ssh(host, f"test -e {marker}").returncode == 1, f"{marker} made on {host.target}"
        # Names the remote shell cannot export are left out, and the start goes on.
        bad_name = post(gw, {"KERNEL_X;touch /tmp/y": "1", "KERNEL_\u00e9": "1"})
        assert bad_name.status_code == 201, bad_name.text
    assert none_left(hosts)


def test_a_hung_host_is_skipped_within_the_connect_timeout_and_the_gateway_stays_responsive(
    hosts: list[Host], entries: list[dict[str, Any]], tmp_path: Path
) -> None:
    hung, other = hosts
    os.kill(hung.sshd_pid, signal.SIGSTOP)  # TCP still accepted by the kernel, no SSH banner
    try:
        with serving(tmp_path, config_for(hosts, entries)) as gw:
            result: dict[str, Any] = {}
            t0 = time.monotonic()
            poster = threading.Thread(target=lambda: result.update(r=post(gw)))
            poster.start()
            slowest = 0.0
            while poster.is_alive():
                t = time.monotonic()
                assert requests.get(f"{gw.url}/api", headers=auth(gw), timeout=5).status_code == 200
                slowest = max(slowest, time.monotonic() - t)
                time.sleep(0.2)
            poster.join()
            elapsed = time.monotonic() - t0
            assert result["r"].status_code == 201, result["r"].text
            assert slowest < 1.0, slowest
            assert 3.0 <= elapsed < 30, elapsed
            assert where(gw, result["r"].json()["id"]).split()[0] == other.user
            log = gateway.log_tail(gw.log_path, 60)
            assert f"{hung.target} unreachable" in log and f"trying {other.target}" in log, log
    finally:
        os.kill(hung.sshd_pid, signal.SIGCONT)
    assert none_left(hosts)


def test_a_failing_precheck_refuses_that_host(
    hosts: list[Host], entries: list[dict[str, Any]], tmp_path: Path
) -> None:
    tampered = ["sh", "-c", "echo 'env differs from its lock' >&2; exit 3"]
    refusing = [{**entries[0], "precheck": tampered}, {**entries[1], "precheck": ["true"]}]
    with serving(tmp_path, config_for(hosts, refusing)) as gw:
        for _ in range(2):
            assert where(gw, started(gw)).split()[0] == hosts[1].user
    with serving(tmp_path, config_for(hosts, [refusing[0]])) as gw:
        r = post(gw)
        assert r.status_code == 409, r.text
        message = r.json()["message"]
        assert hosts[0].target in message and "env differs from its lock" in message, message
    assert none_left(hosts)


def test_remote_kernels_end_when_the_gateway_is_killed(
    hosts: list[Host], entries: list[dict[str, Any]], tmp_path: Path
) -> None:
    with serving(tmp_path, config_for(hosts, entries)) as gw:
        kernels = [started(gw) for _ in range(2)]
        assert {where(gw, k).split()[0] for k in kernels} == {h.user for h in hosts}
        os.kill(gw.pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(gw.pid), timeout=5)
        assert none_left(hosts, timeout=10), [remote_kernels(h) for h in hosts]


def test_reap_ends_processes_by_pid(hosts: list[Host], entries: list[dict[str, Any]]) -> None:
    host = hosts[0]
    out = ssh(host, "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!").stdout
    pid = int(out.strip())
    assert ssh(host, f"kill -0 {pid}").returncode == 0
    entry = {**entries[0], "ssh_key": ""}
    assert reap(entry, [pid], known_hosts=str(host.known_hosts_file), ssh_key=str(host.key)) == []
    assert ssh(host, f"kill -0 {pid}").returncode != 0
    wrong = dataclasses.replace(host, key=hosts[1].key)
    with pytest.raises(Exception, match="(?i)auth"):
        reap({**entries[0], "ssh_key": str(wrong.key)}, [pid], known_hosts=str(host.known_hosts_file))
