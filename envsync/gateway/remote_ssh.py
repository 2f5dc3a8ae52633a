"""SSH for kernels on other hosts: host entries, connections, the launch script, the reaper.

Used by `envsync.gateway.remote` (the kernel provisioner, inside the gateway child) and by
whoever prepares hosts or sweeps after a gateway: `launcher_files()` is what a host needs
beside its env, `reap()` ends kernels by PID. paramiko is imported only when a connection
is made, so importing this module stays cheap; nothing here imports Jupyter.

A kernel runs under one SSH exec channel that stays open for its whole life (`launch_command`):
the remote shell starts the launcher in its own session, prints its PID, and waits for it.
When the channel closes (the kernel is shut down, or the gateway dies and its TCP connection
with it) a watcher on the shell's stdin sees end-of-file and ends the kernel's process group,
SIGTERM then SIGKILL; when the kernel exits first, the channel's exit status says so.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
LAUNCHER_PATH_ENV = "ENVSYNC_LAUNCHER_PATH"  # the launcher's own imports (pycryptodomex), appended
HOST_ENV = "KERNEL_ENVSYNC_HOST"  # the kernel learns the host entry it runs on
KILL_GRACE = 2  # seconds between SIGTERM and SIGKILL on the remote host


def is_env_name(name: str) -> bool:
    """True for a name the remote shell can export (ASCII letters, digits, underscore)."""
    return _NAME.fullmatch(name) is not None


class HostConfigError(ValueError):
    """A host entry of the provisioner's config is malformed."""


@dataclass(frozen=True)
class HostConfig:
    """One host a kernel may run on, as the kernelspec's provisioner config lists it."""

    user: str
    address: str
    port: int
    python: str  # the env's interpreter on that host
    launcher: str  # launch_ipykernel.py on that host, server_listener.py beside it
    pythonpath: str = ""  # folder with pycryptodomex for the launcher, outside the env
    fingerprint: str = ""  # the lock fingerprint of the env there (reported, not enforced)
    precheck: tuple[str, ...] = ()  # argv that must exit 0 on the host before each launch
    ssh_key: str = ""  # this host's private key; "" falls back to the config's `ssh_key`
    log_dir: str = ""  # where the launcher's output goes; "": the launcher's folder

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}"

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> HostConfig:
        known = {"target", "port", "python", "launcher", "pythonpath", "fingerprint", "precheck", "ssh_key"}
        unknown = sorted(set(entry) - known - {"log_dir"})
        if unknown:
            raise HostConfigError(f"unknown host field {unknown[0]!r}")
        target = entry.get("target")
        user, _, address = target.partition("@") if isinstance(target, str) else ("", "", "")
        if not user or not address or _USER.fullmatch(user) is None or address.startswith("-"):
            raise HostConfigError(f"host target must be user@address, got {target!r}")
        port = entry.get("port", 22)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise HostConfigError(f"{target}: port must be 1-65535, got {port!r}")
        texts = {k: entry.get(k, "") for k in ("python", "launcher", "pythonpath", "fingerprint", "ssh_key")}
        texts["log_dir"] = entry.get("log_dir", "")
        if not all(isinstance(v, str) for v in texts.values()):
            raise HostConfigError(f"{target}: python, launcher, pythonpath, fingerprint, ssh_key are strings")
        for key in ("python", "launcher"):
            if not texts[key].startswith("/"):
                raise HostConfigError(f"{target}: {key} must be an absolute path on the host")
        precheck = entry.get("precheck", [])
        if not isinstance(precheck, list) or not all(isinstance(a, str) for a in precheck):
            raise HostConfigError(f"{target}: precheck must be a list of strings (an argv)")
        return cls(user, address, port, precheck=tuple(precheck), **texts)


def parse_hosts(entries: Iterable[Any]) -> list[HostConfig]:
    """The host entries of a provisioner config, validated; HostConfigError on the first bad one."""
    hosts = [HostConfig.parse(e) if isinstance(e, Mapping) else _not_a_mapping(e) for e in entries]
    if not hosts:
        raise HostConfigError("the provisioner config lists no hosts")
    if len({h.target for h in hosts}) != len(hosts):
        raise HostConfigError("a host target is listed twice")
    return hosts


def _not_a_mapping(entry: Any) -> HostConfig:
    raise HostConfigError(f"a host entry must be an object, got {entry!r}")


def route_source(address: str, port: int = 22) -> str:
    """The local address the kernel's routing picks to reach `address` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, port))
        return str(probe.getsockname()[0])


def connect(host: HostConfig, *, known_hosts: str, ssh_key: str, timeout: float) -> paramiko.SSHClient:
    """An authenticated connection to `host`; the host key must be in `known_hosts` (never added).

    Every step (TCP, banner, authentication) waits at most `timeout` seconds. Blocking: call it
    off the event loop.
    """
    import paramiko

    key = host.ssh_key or ssh_key
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(os.path.expanduser(known_hosts or "~/.ssh/known_hosts"))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        keys: dict[str, Any] = (
            {"key_filename": key, "look_for_keys": False, "allow_agent": False} if key else {}
        )
        client.connect(
            host.address, port=host.port, username=host.user, timeout=timeout,
            banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout, **keys,
        )  # fmt: skip
    except BaseException:
        client.close()
        raise
    return client


def run(client: paramiko.SSHClient, command: str, *, timeout: float) -> tuple[int, str]:
    """Run `command` on the connected host; its exit status and output (stdout and stderr)."""
    channel = client.get_transport().open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        chunks = []
        while chunk := channel.recv(65536):
            chunks.append(chunk)
        if not channel.status_event.wait(timeout):
            raise TimeoutError(f"{command!r} did not exit within {timeout:.0f} s")
        return channel.recv_exit_status(), b"".join(chunks).decode(errors="replace")
    finally:
        channel.close()


def start(client: paramiko.SSHClient, command: str, *, timeout: float) -> tuple[paramiko.Channel, int]:
    """Run `launch_command`'s `command`; the channel it keeps running under and the kernel's PID."""
    channel = client.get_transport().open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        data = b""
        while b"\n" not in data and len(data) < 4096:
            chunk = channel.recv(256)
            if not chunk:
                break
            data += chunk
        first = data.partition(b"\n")[0].strip()
        if not first.isdigit():
            said = data.decode(errors="replace").strip() or "nothing"
            raise RuntimeError(f"the launch printed no PID (it said: {said[:300]})")
        channel.settimeout(None)
        return channel, int(first)
    except BaseException:
        channel.close()
        raise


def launch_command(argv: Sequence[str], env: Mapping[str, str], log: str) -> str:
    """The remote command that starts `argv` with `env`, prints its PID and waits (see the top).

    Every name is checked and every value quoted: no client text reaches the shell unquoted.
    It runs under /bin/sh whatever the user's login shell is; fd 3 keeps the channel's stdin for
    the watcher, since sh gives a background job /dev/null as its stdin.
    """
    bad = [name for name in env if _NAME.fullmatch(name) is None]
    if bad:
        raise ValueError(f"invalid environment variable name {bad[0]!r}")
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    script = (
        "trap '' HUP PIPE\nexec 3<&0\n"
        + exports
        + f"(trap - HUP PIPE; exec setsid {shlex.join(argv)}) </dev/null >>{shlex.quote(log)} 2>&1 3<&- &\n"
        'k=$!\necho "$k"\n'
        "{ cat <&3 >/dev/null 2>&1; "
        f'kill -s TERM -- -"$k" "$k"; sleep {KILL_GRACE}; kill -s KILL -- -"$k" "$k"; }} >/dev/null 2>&1 &\n'
        'w=$!\nexec 3<&-\nwait "$k"\ns=$?\nkill "$w" 2>/dev/null\nexit "$s"\n'
    )
    return "exec /bin/sh -c " + shlex.quote(script)


def signal_command(pids: Sequence[int], signal_name: str, *, group: bool = True) -> str:
    """`kill -s NAME` for each PID (and its process group when `group`); quiet if gone."""
    if _NAME.fullmatch(signal_name) is None or not all(isinstance(p, int) and p > 1 for p in pids):
        raise ValueError(f"bad signal {signal_name!r} or PIDs {list(pids)!r}")
    targets = " ".join(f"-{p} {p}" if group else str(p) for p in pids)
    return f"kill -s {signal_name} -- {targets} 2>/dev/null; true"


def reap(
    host: HostConfig | Mapping[str, Any],
    pids: Sequence[int],
    *,
    known_hosts: str = "",
    ssh_key: str = "",
    timeout: float = 10.0,
) -> list[int]:
    """End the kernels `pids` on `host` (SIGTERM, then SIGKILL after a grace); the PIDs still alive.

    For a sweep after a gateway that could not end its kernels itself. Raises what paramiko
    raises when the host cannot be reached.
    """
    config = host if isinstance(host, HostConfig) else HostConfig.parse(host)
    if not pids:
        return []
    client = connect(config, known_hosts=known_hosts, ssh_key=ssh_key, timeout=timeout)
    try:
        listed = " ".join(str(p) for p in pids)
        script = (
            signal_command(pids, "TERM")
            + f"\nfor i in $(seq {KILL_GRACE * 10}); do left=; for p in {listed}; do "
            'kill -0 "$p" 2>/dev/null && left="$left $p"; done; [ -z "$left" ] && break; sleep 0.1; done\n'
            + signal_command(pids, "KILL")
            + f'\nsleep 0.2; for p in {listed}; do kill -0 "$p" 2>/dev/null && echo "$p"; done; true'
        )
        _, out = run(client, "exec /bin/sh -c " + shlex.quote(script), timeout=timeout + KILL_GRACE)
    finally:
        client.close()
    return [int(word) for word in out.split() if word.isdigit()]


def gateway_env(config: Mapping[str, Any]) -> dict[str, str]:
    """Environment the gateway child needs for this provisioner config: none.

    Everything the stock DistributedProvisioner reads from GP_* variables at import (user,
    port, response address) comes from the kernelspec's provisioner config instead; kept so
    the gateway's start can merge it unconditionally.
    """
    return {}


# --- the kernel launcher files ---------------------------------------------------------------

_LAUNCHER = "launch_ipykernel.py"
_LISTENER = "server_listener.py"
# (anchor, text inserted before it): each anchor must occur exactly once in the upstream file.
_LAUNCHER_PATCHES = (
    (
        "from server_listener import setup_server_listener\n",
        "# envsync: the launcher's own dependency (pycryptodomex) lives outside the kernel's env,\n"
        "# in the folder named by ENVSYNC_LAUNCHER_PATH. It is appended to sys.path, so the env's\n"
        "# site-packages come first (PYTHONPATH would put it ahead of them), and taken out of the\n"
        "# environment, so the kernel's own children do not inherit it.\n"
        f'_envsync_path = os.environ.pop("{LAUNCHER_PATH_ENV}", "")\n'
        "if _envsync_path:\n"
        "    import sys\n\n"
        "    sys.path.append(_envsync_path)\n",
    ),
    (
        "    # setup sig handler to cancel spark jobs on interrupts\n",
        "    # envsync: reap the server-listener child as soon as it exits. Otherwise, after the\n"
        "    # gateway's {\"shutdown\": 1}, the listener stays a zombie in the kernel's process group and\n"
        "    # ipykernel waits ~29 s on it before it exits. Default arguments, because start_ipython()\n"
        "    # deletes this module's globals (they become the user namespace).\n"
        "    import multiprocessing as _mp\n\n"
        "    signal.signal(signal.SIGCHLD, lambda _s, _f, _ac=_mp.active_children: _ac())\n\n",
    ),
)


def _launchers_dir() -> Path:
    found = importlib.util.find_spec("gateway_provisioners")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("gateway_provisioners is not installed: its kernel launcher is needed")
    return Path(next(iter(found.submodule_search_locations))) / "kernel-launchers"


def launcher_files() -> dict[str, str]:
    """The files a host needs in the launcher folder (name -> text), the launcher patched.

    From the installed gateway_provisioners: python/scripts/launch_ipykernel.py with
    `_LAUNCHER_PATCHES` applied, and shared/scripts/server_listener.py (python/scripts holds
    only a placeholder). RuntimeError when an anchor is not found exactly once: the upstream
    launcher changed and the patches must be looked at again.
    """
    base = _launchers_dir()
    launcher = (base / "python" / "scripts" / _LAUNCHER).read_text(encoding="utf-8")
    for anchor, insert in _LAUNCHER_PATCHES:
        if launcher.count(anchor) != 1:
            raise RuntimeError(
                f"{_LAUNCHER} of gateway_provisioners changed: {anchor.strip()!r} not found once"
            )
        launcher = launcher.replace(anchor, insert + anchor)
    listener = (base / "shared" / "scripts" / _LISTENER).read_text(encoding="utf-8")
    if "placeholder" in listener.lower()[:600]:
        raise RuntimeError(f"{_LISTENER} of gateway_provisioners is a placeholder")
    return {_LAUNCHER: launcher, _LISTENER: listener}
