"""`launch --hosts`: the notebook's kernels run on other hosts, served by the local gateway.

The hosts are made ready first (`ops.hosts.prepare`: envsync there, the locked env built
and checked by each host's own envsync); a host that is not ready and in sync is left
out, and the launch fails only when none is left. The local gateway then serves one
kernelspec, `envsync-<project>-hosts`, whose kernels start through the SSH provisioner
(`envsync.gateway.remote`) on the ready hosts in turn, with the same token, origin and
forced-kernel rules as a local launch. Before each start the host's envsync checks its
env again (`check`): a host whose env was changed since is refused for that start, and
the next host takes it. The editor API (`/api/envsync`, lock updates) is a local
launch's: it is not served here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsync import ssh
from envsync.errors import GatewayError
from envsync.fsutil import atomic_write_text
from envsync.gateway import process, registry
from envsync.gateway.process import RunningGateway
from envsync.gateway.spec import GatewaySpec
from envsync.lock.model import Lock
from envsync.ops import hosts
from envsync.ops.hosts import HostState
from envsync.ops.launch import LaunchRequest, Serving, check
from envsync.ops.preflight import Notice
from envsync.settings import Settings

PROVISIONER = "envsync-ssh-provisioner"
# argv[0] and argv[1] are each host's own interpreter and launcher: the provisioner puts them in.
KERNEL_ARGV = [
    "{host_python}", "{host_launcher}",
    "--kernel-id", "{kernel_id}", "--port-range", "{port_range}",
    "--response-address", "{response_address}", "--public-key", "{public_key}",
    "--transport-encryption", "{transport_encryption}",
    "--kernel-class-name", "ipykernel.ipkernel.IPythonKernel",
]  # fmt: skip


@dataclass(frozen=True)
class HostsLaunchInfo(Serving):
    """A serving gateway whose kernels run on `ready` hosts."""

    ready: tuple[HostState, ...]
    left_out: tuple[HostState, ...]
    notices: tuple[Notice, ...]
    gateway: RunningGateway = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.served(), "connection": self.connection,
            "hosts": [s.to_dict() for s in self.ready], "left-out": [s.to_dict() for s in self.left_out],
        }  # fmt: skip


@contextlib.contextmanager
def launch_on_hosts(
    request: LaunchRequest,
    targets: Sequence[ssh.Target],
    options: ssh.SshOptions,
    *,
    settings: Settings,
    notice: Callable[[Notice], None] = lambda _n: None,
    on_step: Callable[[ssh.Target, str], None] | None = None,
) -> Iterator[HostsLaunchInfo]:
    """Preflight, make the hosts ready, write the hosts' kernelspec, start the gateway; undo on exit."""
    from envsync.env import history
    from envsync.gateway.remote import launcher_files
    from envsync.ops import preflight

    check(request)
    notebook = Path(os.path.abspath(request.notebook))
    proj = preflight.load_for_launch(request.notebook)
    pre = preflight.check(
        proj, settings=settings, frozen=request.frozen, yes=request.yes,
        last_run=history.last_run(settings, proj.manifest.project),
    )  # fmt: skip
    for each in pre.notices:
        notice(each)
    data = hosts.notebook_bytes(notebook)
    states = hosts.prepare(
        pre.project, data, targets, options, settings, on_step=on_step, launcher_files=launcher_files()
    )
    ready = [s for s in states if s.clean and s.fingerprint == pre.lock.fingerprint]
    left_out = [s for s in states if s not in ready]
    if not ready:
        reasons = "; ".join(f"{s.target}: {_why(s, pre.lock)}" for s in states)
        raise GatewayError(f"no host is ready for this lock: {reasons}", hint="`envsync hosts check` shows each host")
    project = pre.project.manifest.project
    name = write_kernelspec(
        settings, project=project, lock=pre.lock, ready=ready, options=options,
        remote_notebook=hosts.remote_notebook_name(project, data),
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        spec = GatewaySpec(
            kernel_name=name,
            jupyter_data_dir=settings.jupyter_data_dir,
            serve=request.serve,
            working_dir=notebook.parent,
            python=KERNEL_ARGV[0],
            fingerprint=pre.lock.fingerprint,
        )
        gw = process.start(spec, token=request.token)
        stack.callback(process.stop, gw)
        registry.record(settings, gw, notebook=notebook, project=project, fingerprint=pre.lock.fingerprint)
        stack.callback(registry.forget, settings, gw.port)
        yield HostsLaunchInfo(
            url=gw.url, token=gw.token, kernel=name, fingerprint=pre.lock.fingerprint, pid=gw.pid,
            notebook=notebook, project=project, ready=tuple(ready), left_out=tuple(left_out),
            notices=tuple(pre.notices), gateway=gw,
        )  # fmt: skip


def _why(state: HostState, lock: Lock) -> str:
    if not state.ok:
        return state.reason
    if state.fingerprint != lock.fingerprint:
        return f"its env has fingerprint {state.fingerprint}"
    return "its env differs from the lock (`envsync hosts check`)"


def write_kernelspec(
    settings: Settings,
    *,
    project: str,
    lock: Lock,
    ready: Sequence[HostState],
    options: ssh.SshOptions,
    remote_notebook: str,
) -> str:
    """Write `envsync-<project>-hosts` for the ready hosts; its name."""
    name = f"envsync-{project}-hosts"
    entries = []
    known_hosts = ""
    for state in ready:
        found = ssh_settings(state.target, options)
        known_hosts = known_hosts or found.get("known_hosts", "")
        entries.append(
            {
                "target": f"{found.get('user') or state.target.user or _login()}@{state.target.host}",
                "port": int(found.get("port") or state.target.port or 22),
                "python": state.python,
                "launcher": f"{state.tool}/src/launcher/launch_ipykernel.py",
                "pythonpath": f"{state.tool}/src/launcher/lib",
                "fingerprint": state.fingerprint,
                "ssh_key": found.get("ssh_key", ""),
                # The host's envsync checks its env before each kernel starts there.
                "precheck": [f"{state.tool}/venv/bin/python", "-m", "envsync", "check",
                             f"{state.tool}/notebooks/{remote_notebook}.ipynb"],
            }  # fmt: skip
        )
    config: dict[str, Any] = {"hosts": entries, "load_balancing": "least-connection"}
    if options.key is not None:
        config["ssh_key"] = str(options.key.resolve())
    if known_hosts:
        config["known_hosts"] = known_hosts
    spec = {
        "argv": KERNEL_ARGV,
        "display_name": f"{project} (envsync, {len(entries)} hosts)",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "envsync": {
                "project": project,
                "fingerprint": lock.fingerprint,
                "hosts": [{"host": e["target"], "fingerprint": e["fingerprint"]} for e in entries],
            },
            "supported_encryption": ["curve"],
            "kernel_provisioner": {"provisioner_name": PROVISIONER, "config": config},
        },
    }
    folder = settings.jupyter_data_dir / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "kernel.json", json.dumps(spec, indent=1) + "\n")
    return name


def ssh_settings(target: ssh.Target, options: ssh.SshOptions) -> dict[str, str]:
    """What the ssh configuration says for `target` (user, port, key, known_hosts), as ssh would read it."""
    import paramiko

    path = options.config or Path.home() / ".ssh" / "config"
    if not path.is_file():
        return {}
    found = paramiko.SSHConfig.from_path(str(path)).lookup(target.host)
    out = {"user": str(found.get("user", "")), "port": str(found.get("port", ""))}
    keys = found.get("identityfile") or []
    if keys and not options.key:
        out["ssh_key"] = os.path.expanduser(str(keys[0]))
    if found.get("userknownhostsfile"):
        out["known_hosts"] = os.path.expanduser(str(found["userknownhostsfile"]).split()[0])
    return {k: v for k, v in out.items() if v}


def _login() -> str:
    import getpass

    return getpass.getuser()
