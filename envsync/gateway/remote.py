"""A kernel provisioner that starts envsync kernels on other hosts over SSH.

`EnvsyncSSHProvisioner` (entry point `envsync-ssh-provisioner` of
`jupyter_client.kernel_provisioners`) builds on gateway_provisioners' DistributedProvisioner,
whose launcher sends the kernel's ports back to the gateway, encrypted, and adds what that
class lacks:

- each host has its own user, port, key, interpreter and launcher (argv[0] and argv[1] of the
  kernelspec are replaced per host), and its host key must already be in `known_hosts`;
- SSH runs in a worker thread with a timeout on every step: a hung host holds one start for
  `connect_timeout` seconds, never the gateway's event loop;
- the gateway picks the host (round-robin or least-connection); a client's
  `KERNEL_REMOTE_HOST` is dropped, and every value sent to the remote shell is quoted;
- an optional per-host `precheck` command must exit 0 before a launch; a host that refuses
  or cannot be reached is skipped for the next one, and the start fails (409 when a host
  refused, else 503) only when none is left;
- the kernel lives under one SSH channel (`remote_ssh.launch_command`): poll reads its exit
  status, signals go by PID over SSH, and when the channel closes (shutdown, a failed start,
  or the gateway's death) the remote side ends the kernel's process group;
- the kernel's environment names its host in `KERNEL_ENVSYNC_HOST`.

The provisioner's config (the kernelspec's `metadata.kernel_provisioner.config`):
`hosts` (objects, see `remote_ssh.HostConfig`), `ssh_key`, `known_hosts`, `connect_timeout`,
`launch_timeout`, `load_balancing`, `response_ip` (the address hosts reach the gateway's
response socket on; default: the source address the routing picks to reach the first host).
"""

from __future__ import annotations

import asyncio
import posixpath
import shlex
import signal
from typing import Any, ClassVar

# gateway_provisioners ships no type information: pyproject.toml tells mypy so.
from gateway_provisioners.distributed import DistributedProvisioner
from tornado import web
from traitlets import Dict, Enum, Float, List, Unicode, default

from envsync.gateway import remote_ssh
from envsync.gateway.remote_ssh import HostConfig, gateway_env, launcher_files, reap

__all__ = ["EnvsyncSSHProvisioner", "HostConfig", "gateway_env", "launcher_files", "reap"]


class HostRefused(RuntimeError):
    """A host's precheck failed: its env is not the one to run."""


def pin_response_ip(ip: str) -> None:
    """Make gateway_provisioners' response socket listen on `ip` (read from GP_RESPONSE_IP at import)."""
    from gateway_provisioners import response_manager

    manager = response_manager.ResponseManager
    if manager.initialized():
        bound = manager.instance().response_address.rpartition(":")[0]
        if bound != ip:
            raise RuntimeError(f"the kernel response socket already listens on {bound}, not {ip}")
        return
    response_manager.response_ip = ip


class EnvsyncSSHProvisioner(DistributedProvisioner):  # type: ignore[misc]
    """DistributedProvisioner with per-host SSH settings, timeouts, prechecks and PID-based ends."""

    hosts = List(Dict(), config=True, help="host entries (remote_ssh.HostConfig)")
    ssh_key = Unicode("", config=True, help="private key file for hosts without their own")
    known_hosts = Unicode("", config=True, help="known_hosts file; empty: ~/.ssh/known_hosts")
    connect_timeout = Float(10.0, config=True, help="seconds for each SSH step")
    load_balancing = Enum(["round-robin", "least-connection"], "round-robin", config=True)
    response_ip = Unicode("", config=True, help="the gateway's address as the hosts reach it")

    _turn: ClassVar[int] = 0  # round-robin position, shared by the gateway's kernels
    _load: ClassVar[dict[str, int]] = {}  # kernels running or starting per host target

    @default("unauthorized_users")
    def _nobody_unauthorized(self) -> set[str]:
        # The stock default refuses KERNEL_USERNAME=root; the kernel runs as the host's
        # configured user whatever that name says.
        return set()

    def __init__(self, **kwargs: Any) -> None:
        parsed = remote_ssh.parse_hosts(kwargs.get("hosts") or [])
        first = parsed[0]
        pin_response_ip(str(kwargs.get("response_ip") or remote_ssh.route_source(first.address, first.port)))
        super().__init__(**kwargs)
        self._hosts = parsed
        self._host: HostConfig | None = None
        self._client: Any = None  # paramiko.SSHClient while the kernel runs
        self._channel: Any = None  # the channel the kernel runs under
        self._counted = False

    # --- choosing a host ---

    def _order(self) -> list[HostConfig]:
        cls = EnvsyncSSHProvisioner
        start = cls._turn % len(self._hosts)
        cls._turn += 1
        order = self._hosts[start:] + self._hosts[:start]
        if self.load_balancing == "least-connection":
            order.sort(key=lambda h: cls._load.get(h.target, 0))  # stable: ties keep the rotation
        return order

    def _count(self, host: HostConfig, delta: int) -> None:
        load = EnvsyncSSHProvisioner._load
        load[host.target] = max(0, load.get(host.target, 0) + delta)

    # --- launching ---

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if len(cmd) < 2:
            raise ValueError("the kernelspec's argv needs the interpreter and the launcher first")
        env = dict(kwargs.get("env") or {})
        asked = env.pop("KERNEL_REMOTE_HOST", None)
        if asked is not None:
            self.log.warning(
                "ignoring KERNEL_REMOTE_HOST=%r from the request: the gateway picks the host", asked
            )
        order, refused, failed = self._order(), list[str](), list[str]()
        for n, host in enumerate(order):
            self._count(host, +1)  # counted while starting, so parallel starts spread out
            try:
                self._client, self._channel, self.pid = await asyncio.to_thread(
                    self._start_on, host, cmd, env
                )
                break
            except HostRefused as exc:
                refused.append(f"{host.target} refused: {exc}")
            except Exception as exc:  # noqa: BLE001 - any SSH failure moves on to the next host
                failed.append(f"{host.target} unreachable: {type(exc).__name__}: {exc}")
            self._count(host, -1)
            more = "; trying " + order[n + 1].target if n + 1 < len(order) else "; no host left"
            self.log.warning("kernel %s not started: %s%s", self.kernel_id, (refused + failed)[-1], more)
        else:
            why = "; ".join(refused + failed)
            raise web.HTTPError(409 if refused else 503, "%s", f"no host could start the kernel: {why}")
        self._host, self._counted = host, True
        self.assigned_host = host.address
        self.ip = self.assigned_ip = host.address
        self.log_kernel_launch(cmd)
        try:
            await self.confirm_remote_startup()
        except BaseException:
            await self._end("TERM")
            raise
        return self.connection_info

    def _start_on(self, host: HostConfig, cmd: list[str], env: dict[str, Any]) -> tuple[Any, Any, int]:
        """Connect, run the precheck, start the launcher; (client, channel, PID). In a thread."""
        client = remote_ssh.connect(
            host, known_hosts=self.known_hosts, ssh_key=self.ssh_key, timeout=self.connect_timeout
        )
        try:
            if host.precheck:
                status, out = remote_ssh.run(client, shlex.join(host.precheck), timeout=self.launch_timeout)
                if status != 0:
                    said = (out.strip().splitlines() or ["(no output)"])[-1]
                    raise HostRefused(f"`{shlex.join(host.precheck)}` exited {status}: {said}")
            # Client KERNEL_* names that are not plain shell names are left out, not refused.
            named = {k: v for k, v in env.items() if k.startswith("KERNEL_") and remote_ssh.is_env_name(k)}
            exports = {k: str(v) for k, v in named.items()}
            exports.update({k: str(v) for k, v in (self.kernel_spec.env or {}).items()})
            exports[remote_ssh.HOST_ENV] = host.target
            if host.pythonpath:
                exports[remote_ssh.LAUNCHER_PATH_ENV] = host.pythonpath
            folder = host.log_dir or posixpath.dirname(host.launcher)
            self.kernel_log = posixpath.join(folder, f"kernel-{self.kernel_id}.log")
            argv = [host.python, host.launcher, *cmd[2:]]
            command = remote_ssh.launch_command(argv, exports, self.kernel_log)
            channel, pid = remote_ssh.start(client, command, timeout=self.connect_timeout)
            return client, channel, pid
        except BaseException:
            client.close()
            raise

    async def confirm_remote_startup(self) -> None:
        self.start_time = self.get_current_time()
        while True:
            await self.handle_launch_timeout()
            if self._channel is not None and self._channel.exit_status_ready():
                status = self._channel.recv_exit_status()
                where = f"{self._host.target if self._host else '?'}:{self.kernel_log}"
                raise RuntimeError(f"the kernel exited ({status}) before it reported its ports; see {where}")
            if await self.receive_connection_info():
                return

    # --- the running kernel ---

    async def poll(self) -> int | None:
        channel = self._channel
        if channel is None:
            return 0 if self._host is not None else None
        if not channel.exit_status_ready():
            return None
        status = int(channel.recv_exit_status())
        return status if status > 0 else 1 if status < 0 else 0

    async def send_signal(self, signum: int) -> None:
        if signum == 0:
            return
        group = signum in (signal.SIGTERM, signal.SIGKILL)  # the listener and the kernel's children too
        await asyncio.to_thread(self._signal, signal.Signals(signum).name[3:], group)

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    def _signal(self, name: str, group: bool) -> None:
        """`kill -s NAME` the kernel's PID on its host, on the open connection or a new one."""
        host = self._host
        if host is None or self.pid <= 1:
            return
        command = remote_ssh.signal_command([self.pid], name, group=group)
        client, own = self._client, None
        try:
            transport = client.get_transport() if client is not None else None
            if transport is None or not transport.is_active():
                client = own = remote_ssh.connect(
                    host, known_hosts=self.known_hosts, ssh_key=self.ssh_key, timeout=self.connect_timeout
                )
            remote_ssh.run(client, command, timeout=self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - reported; closing the channel still ends the kernel
            self.log.warning("SIG%s to kernel %s (PID %s on %s) failed: %s", name, self.kernel_id,
                             self.pid, host.target, exc)  # fmt: skip
        finally:
            if own is not None:
                own.close()

    async def _end(self, name: str) -> None:
        await asyncio.to_thread(self._signal, name, True)
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        # Closing the channel is what makes the remote watcher end the kernel's process group.
        channel, client, self._channel, self._client = self._channel, self._client, None, None
        for one in (channel, client):
            if one is not None:
                one.close()
        if self._counted and self._host is not None:
            self._count(self._host, -1)
            self._counted = False

    async def cleanup(self, restart: bool = False) -> None:
        await asyncio.to_thread(self._close)
        await super().cleanup(restart)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        if self._host is not None:
            info.update(envsync_host=self._host.target, envsync_fingerprint=self._host.fingerprint)
        return info

    def log_kernel_launch(self, cmd: list[str]) -> None:
        target = self._host.target if self._host else "?"
        self.log.info(
            "kernel %s started on %s, PID %s, log %s", self.kernel_id, target, self.pid, self.kernel_log
        )
