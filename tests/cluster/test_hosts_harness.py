"""The SSH hosts of tests/support/hosts.py are separate machines as far as a client can tell:
each answers only its own key as its own user, sees only its own address, reaches nothing but
its 198.18.X.0/24 link, installs packages from an index on the gateway address, and leaves
nothing behind (namespace, link, user, process) once its context exits.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.cluster.conftest import PROBE
from tests.support.hostindex import download_wheels, serve_wheels
from tests.support.hosts import (
    Host,
    HostsError,
    HostsUnavailable,
    check_prerequisites,
    leftovers,
    ssh,
    ssh_hosts,
)
from tests.support.processes import alive
from tests.wheelhouse import LocalIndex

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _root(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def _in_namespace(host: Host, *argv: str) -> subprocess.CompletedProcess[str]:
    return _root("ip", "netns", "exec", host.name, *argv)


def _ok(host: Host, command: str, timeout: float = 30.0) -> str:
    done = ssh(host, command, timeout=timeout)
    assert done.returncode == 0, f"{command!r} on {host.target} exited {done.returncode}: {done.stderr}"
    return done.stdout


def _pip_install(index: LocalIndex, requirement: str, target: str) -> str:
    address = index.url.split("/")[2].split(":")[0]
    return (
        f"python3 -m pip install --no-cache-dir --disable-pip-version-check --no-input --quiet "
        f"--target {target} --index-url {index.url} --trusted-host {address} '{requirement}'"
    )


def test_each_host_answers_as_its_own_user_in_its_own_home(hosts: list[Host]) -> None:
    assert (
        len({h.name for h in hosts}) == len({h.address for h in hosts}) == len({h.user for h in hosts}) == 2
    )
    for host in hosts:
        assert _ok(host, "id -un; echo $HOME; pwd").split() == [host.user, str(host.home), str(host.home)]
        assert host.home.stat().st_uid == host.uid
    first, second = hosts
    done = ssh(first, f"ls {second.home}")
    assert done.returncode != 0 and "Permission denied" in done.stderr, done


def test_a_host_takes_only_its_own_key_and_user(hosts: list[Host]) -> None:
    first, second = hosts
    assert _ok(first, "echo hello") == "hello\n"
    other_key = ssh(dataclasses.replace(first, key=second.key), "true")
    assert other_key.returncode == 255 and "Permission denied" in other_key.stderr, other_key
    # first's user and key are valid, but on first's machine only: second allows its own user.
    other_user = ssh(dataclasses.replace(second, user=first.user, key=first.key), "true")
    assert other_user.returncode == 255 and "Permission denied" in other_user.stderr, other_user


def test_the_known_hosts_line_is_the_hosts_real_key(hosts: list[Host], tmp_path: Path) -> None:
    first, second = hosts
    assert first.known_hosts.startswith(f"{first.address} ssh-ed25519 ")
    assert first.known_hosts_file.read_text().splitlines() == [h.known_hosts for h in hosts]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{first.address} {second.known_hosts.split(' ', 1)[1]}\n")
    done = ssh(dataclasses.replace(first, known_hosts_file=wrong), "true")
    assert done.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr, done


def test_sshd_runs_inside_the_hosts_namespace(hosts: list[Host]) -> None:
    root_namespace = os.stat("/proc/self/ns/net").st_ino
    for host in hosts:
        assert psutil.Process(host.sshd_pid).exe() == "/usr/sbin/sshd"
        assert host.sshd_pid in [int(p) for p in _root("ip", "netns", "pids", host.name).stdout.split()]
        inode = os.stat(f"/proc/{host.sshd_pid}/ns/net").st_ino
        assert inode == host.netns_inode != root_namespace


def test_each_host_sees_only_its_own_address(hosts: list[Host]) -> None:
    for host in hosts:
        assert _ok(host, "hostname -I").split() == [host.address]
        addresses = re.findall(r"inet (\S+)", _in_namespace(host, "ip", "-4", "-o", "addr", "show").stdout)
        assert sorted(addresses) == sorted(["127.0.0.1/8", f"{host.address}/24"])
        assert host.address.startswith(("198.18.", "198.19.")) and host.gateway.endswith(".1")


def test_a_host_has_no_route_beyond_its_link(hosts: list[Host]) -> None:
    machine = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)", _root("ip", "-4", "-o", "addr", "show").stdout)
    elsewhere = [a for a in machine if not a.startswith(("127.", "198.18.", "198.19."))]
    for host in hosts:
        assert _in_namespace(host, "ip", "route", "get", host.gateway).returncode == 0
        for address in ["1.1.1.1", "8.8.8.8", *elsewhere]:
            done = _in_namespace(host, "ip", "route", "get", address)
            assert done.returncode != 0 and "unreachable" in done.stderr, (address, done)
        routes = _in_namespace(host, "ip", "-4", "route", "show", "table", "all").stdout
        assert "default" not in routes, routes


def test_loopback_inside_is_the_hosts_own_and_the_gateway_is_this_machine(hosts: list[Host]) -> None:
    host = hosts[0]
    with (
        socket.create_server(("127.0.0.1", 0)) as loopback,
        socket.create_server((host.gateway, 0)) as gateway,
    ):
        loopback_port, gateway_port = loopback.getsockname()[1], gateway.getsockname()[1]
        # The same command reaches the gateway address, so only the address makes the difference.
        refused = ssh(host, f"echo hi > /dev/tcp/127.0.0.1/{loopback_port}")
        assert refused.returncode != 0 and "Connection refused" in refused.stderr, refused
        _ok(host, f"echo hi > /dev/tcp/{host.gateway}/{gateway_port}")
        gateway.settimeout(5)
        connection, peer = gateway.accept()
        connection.close()
        assert peer[0] == host.address


def test_the_hosts_reach_each_other(hosts: list[Host]) -> None:
    first, second = hosts
    banner = _ok(first, f"timeout 5 head -c 8 < /dev/tcp/{second.address}/22")
    assert banner == "SSH-2.0-"


def test_pip_on_a_host_installs_from_the_index_over_the_link(
    hosts: list[Host], host_index: LocalIndex
) -> None:
    name, version = PROBE
    module = name.replace("-", "_")
    assert host_index.url.startswith(f"http://{hosts[0].gateway}:")
    install = _pip_install(host_index, f"{name}=={version}", "~/site")
    show = f"PYTHONPATH=~/site python3 -c 'import {module} as m; print(m.__file__, m.__version__)'"
    with ThreadPoolExecutor(len(hosts)) as pool:  # both hosts at once: pip takes ~1 s to start
        printed = list(pool.map(lambda host: _ok(host, f"{install} && {show}", timeout=120), hosts))
    for host, line in zip(hosts, printed, strict=True):
        assert line.split() == [f"{host.home}/site/{module}/__init__.py", version]


@pytest.mark.network
def test_a_wheelhouse_is_downloaded_once_and_installs_on_a_host(hosts: list[Host], tmp_path: Path) -> None:
    requirement = "markupsafe==2.1.5"  # a compiled extension: the wheel must fit the host's CPython 3.11
    folder = download_wheels([requirement])
    wheels = sorted(p.name for p in folder.glob("*.whl"))
    assert len(wheels) == 1 and re.fullmatch(
        r"MarkupSafe-2\.1\.5-cp311-cp311-.*manylinux.*x86_64\.whl", wheels[0]
    )
    started = time.monotonic()
    assert download_wheels([requirement]) == folder
    assert time.monotonic() - started < 1.0, "the second call downloaded again"

    host = hosts[1]
    index = serve_wheels(folder, tmp_path / "index", host.gateway)
    try:
        _ok(host, _pip_install(index, requirement, "~/site-mk"), timeout=120)
    finally:
        index.stop()
    printed = _ok(
        host, "PYTHONPATH=~/site-mk python3 -c 'import markupsafe._speedups as s; print(s.__file__)'"
    )
    assert printed.startswith(f"{host.home}/site-mk/markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so")


def test_nothing_is_left_after_the_context(cluster_ready: None) -> None:
    with ssh_hosts(1) as made:
        (host,) = made
        background = int(_ok(host, "nohup sleep 600 >/dev/null 2>&1 & echo $!"))
        assert alive(background)
        present = leftovers(made)
        for thing in (f"namespace {host.name}", f"link {host.link}", f"user {host.user}"):
            assert thing in present
        assert f"process {background} in the namespace of {host.name}" in present
    assert leftovers(made) == []
    assert host.name not in _root("ip", "netns", "list").stdout
    assert _root("ip", "link", "show", host.link).returncode != 0
    assert _root("ip", "link", "show", host.bridge).returncode != 0
    assert _root("getent", "passwd", host.user).returncode == 2
    assert _root("getent", "group", host.user).returncode == 2
    assert not alive(background) and not alive(host.sshd_pid)
    assert not host.home.exists() and not host.key.exists()


def test_cleanup_also_runs_when_the_body_fails(cluster_ready: None) -> None:
    with pytest.raises(RuntimeError, match="the body failed"), ssh_hosts(1) as made:
        _ok(made[0], "true")
        raise RuntimeError("the body failed")
    assert leftovers(made) == []


def test_two_runs_at_once_get_separate_networks(cluster_ready: None) -> None:
    with ssh_hosts(1) as (first,), ssh_hosts(1) as (second,):
        assert first.gateway != second.gateway and first.bridge != second.bridge
        assert _ok(first, "hostname -I").split() == [first.address]
        assert _ok(second, "hostname -I").split() == [second.address]
        done = _in_namespace(first, "ip", "route", "get", second.address)
        assert done.returncode != 0 and "unreachable" in done.stderr, done
    assert leftovers([first, second]) == []


def test_a_missing_sshd_is_a_clear_error() -> None:
    with pytest.raises(
        HostsUnavailable, match=r"/nonexistent/sshd \(Debian: apt-get install openssh-server\)"
    ):
        check_prerequisites(Path("/nonexistent/sshd"))
    with (
        pytest.raises(HostsUnavailable, match="cannot make test SSH hosts"),
        ssh_hosts(1, sshd=Path("/nonexistent/sshd")),
    ):
        pass


def test_an_sshd_that_does_not_start_is_a_clear_error_and_leaves_nothing(cluster_ready: None) -> None:
    with pytest.raises(HostsError, match=r"sshd in envsync-t-[0-9a-f]{8} exited 1") as raised:
        with ssh_hosts(1, sshd=Path("/bin/false")):
            pytest.fail("the body ran although sshd never started")
    token = re.search(r"envsync-t-([0-9a-f]{8})", str(raised.value)).group(1)  # type: ignore[union-attr]
    assert f"envsync-t-{token}" not in _root("ip", "netns", "list").stdout
    assert _root("ip", "link", "show", f"esv{token}").returncode != 0
    assert _root("getent", "passwd", f"est{token}").returncode == 2
