"""`envsync hosts prepare` and `hosts check` against two real SSH hosts (network namespaces).

The notebook is locked here against an index of real wheels (ipykernel and its dependencies,
and what envsync itself needs on a host) served on the hosts' gateway address; each host
gets envsync installed by `hosts prepare`, builds the env as its own user, and answers
`hosts check` with its own fingerprint and drift.
"""

from __future__ import annotations

import importlib.metadata
import time

import pytest

from tests.support.hostnotebook import Setup, by_host, envsync, on_hosts
from tests.support.hosts import ssh

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.network]


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
    # Left as it is by a plain prepare (the host is not ready), brought back by --repair.
    assert on_hosts(setup, "prepare", "--json").returncode == 3
    repaired = on_hosts(setup, "prepare", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert all(s["drift"]["clean"] for s in by_host(repaired.stdout).values())  # type: ignore[index]


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
