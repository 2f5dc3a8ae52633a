"""Kernel envs on the SSH test hosts (tests/support/hosts.py), made by hand for provisioner tests.

Each host gets what envsync's host preparation gives it, in miniature: a venv with ipykernel
(`~/env`), and a launcher folder (`~/launcher`) holding `envsync.gateway.remote.launcher_files()`
with pycryptodomex installed beside it in `~/launcher/lib`, outside the env. Packages come from an
index on the hosts' gateway address (tests/support/hostindex.py).
"""

from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from envsync.gateway.remote import launcher_files
from envsync.ops.launch_hosts import KERNEL_ARGV
from tests.support.hosts import Host, ssh
from tests.wheelhouse import LocalIndex

REQUIREMENTS = ("ipykernel", "pycryptodomex")
PROVISIONER = "envsync-ssh-provisioner"


def _ok(host: Host, command: str, *, input: str | None = None, timeout: float = 300.0) -> str:  # noqa: A002
    done = ssh(host, command, input=input, timeout=timeout)
    assert done.returncode == 0, (
        f"{command!r} on {host.target} exited {done.returncode}: {done.stderr[-2000:]}"
    )
    return done.stdout


def prepare_host(host: Host, index: LocalIndex) -> dict[str, Any]:
    """Make the env and the launcher folder on `host`; its host entry for the provisioner config."""
    home = str(host.home)
    pip = f"--no-cache-dir --disable-pip-version-check --no-input --quiet --index-url {index.url} "
    pip += f"--trusted-host {host.gateway}"
    _ok(host, f"python3 -m venv {home}/env && {home}/env/bin/python -m pip install {pip} ipykernel")
    _ok(
        host,
        f"mkdir -p {home}/launcher && python3 -m pip install {pip} --target {home}/launcher/lib pycryptodomex",
    )
    for name, text in launcher_files().items():
        _ok(host, f"cat > {shlex.quote(f'{home}/launcher/{name}')}", input=text)
    return {
        "target": host.target,
        "port": 22,
        "python": f"{home}/env/bin/python",
        "launcher": f"{home}/launcher/launch_ipykernel.py",
        "pythonpath": f"{home}/launcher/lib",
        "fingerprint": "sha256:test",
        "ssh_key": str(host.key),
    }


def prepare_hosts(hosts: list[Host], index: LocalIndex) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(len(hosts)) as pool:
        return list(pool.map(lambda h: prepare_host(h, index), hosts))


def write_kernelspec(data_dir: Path, name: str, config: dict[str, Any]) -> None:
    """A kernelspec `name` that starts its kernels through the provisioner with `config`."""
    spec = {
        # argv[0] and argv[1] are replaced per host by the provisioner.
        "argv": KERNEL_ARGV,
        "display_name": name,
        "language": "python",
        "interrupt_mode": "signal",
        "env": {"ENVSYNC_SPEC_VALUE": "literal $(not expanded) `nor this`"},
        "metadata": {
            "envsync": {"fingerprint": "sha256:test"},
            "supported_encryption": ["curve"],
            "kernel_provisioner": {"provisioner_name": PROVISIONER, "config": config},
        },
    }
    folder = data_dir / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))


def remote_kernels(host: Host) -> list[int]:
    """PIDs of the launcher processes (kernels and their listeners) running as the host's user."""
    out = _ok(host, f"ps -u {host.user} -o pid=,args=", timeout=30)
    return [int(line.split()[0]) for line in out.splitlines() if "launch_ipykernel.py" in line]
