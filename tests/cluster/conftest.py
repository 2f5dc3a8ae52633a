"""Fixtures for tests against real SSH hosts on this machine (tests/support/hosts.py).

Making hosts needs root, iproute2's `ip` and Debian's sshd (scripts/test.sh installs them).
Without them a test is a skip with the reason, or a failure when ENVSYNC_REQUIRE_CLUSTER=1
or CI=true: there the hosts must be made.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.hostnotebook import Setup, locked_notebook
from tests.support.hosts import Host, HostsUnavailable, check_prerequisites, leftovers, ssh_hosts
from tests.wheelhouse import LocalIndex

PROBE = ("envsync-hostprobe", "1.0.0")  # the tiny wheel `host_index` serves


def require_cluster() -> None:
    """Skip with what is missing, or fail when CI demands the cluster tests."""
    try:
        check_prerequisites()
    except HostsUnavailable as exc:
        if os.environ.get("ENVSYNC_REQUIRE_CLUSTER") == "1" or os.environ.get("CI") == "true":
            pytest.fail(
                f"{exc} (ENVSYNC_REQUIRE_CLUSTER=1 or CI=true, so this is a failure, not a skip)",
                pytrace=False,
            )
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def cluster_ready() -> None:
    """This machine can make test hosts (or the test skips or fails, see require_cluster)."""
    require_cluster()


@pytest.fixture(scope="session")
def hosts(cluster_ready: None) -> Iterator[list[Host]]:
    """Two SSH hosts on one 198.18.X.0/24 bridge; nothing of them is left after the session."""
    with ssh_hosts(2) as made:
        yield made
    left = leftovers(made)
    assert not left, f"left behind by the test hosts: {left}"


@pytest.fixture(scope="session")
def host_index(hosts: list[Host], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    """A PEP 503 index with one tiny wheel (PROBE), on the hosts' gateway address."""
    index = LocalIndex(tmp_path_factory.mktemp("host-index"))
    index.add(*PROBE)
    index.start(host=hosts[0].gateway)
    yield index
    index.stop()


@pytest.fixture(scope="session")
def setup(hosts: list[Host], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A notebook locked (ipykernel) against real wheels served on the hosts' gateway address."""
    with locked_notebook(hosts, tmp_path_factory.mktemp("hosts-nb")) as made:
        yield made
