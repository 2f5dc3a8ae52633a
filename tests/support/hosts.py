"""Real SSH hosts on this machine: a network namespace, a Unix user and an sshd per host.

`ssh_hosts(n)` builds a small LAN for tests that need other machines:

- a bridge `esb<id>` in the root namespace holds this machine's address on it, 198.18.X.1/24.
  X is drawn at random among the /24s of 198.18.0.0/15 (reserved for benchmarks, never
  routed) that no address or route here uses yet, under a lock file: two runs never share one;
- host i is the namespace `envsync-t-<id>`, joined to the bridge by a veth pair (`eth0` inside,
  198.18.X.(i+2)/24). It has `lo`, that link and no default route, so it reaches 198.18.X.0/24
  only: the gateway address (where an index or a gateway for it listens) and the other hosts;
- each host has its own user `est<id>` (home under a temp folder), a client key pair and a host
  key made for it, and Debian's sshd running inside the namespace on port 22.

On exit, also when the body fails, everything is removed in reverse order: the processes in
each namespace (sshd first) end by PID, then the user, the link, the namespace, the bridge and
the temp folder. A failing step does not stop the others; every failure is reported.
sshd needs its privilege-separation folder /run/sshd; it is made when missing and left there.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import psutil

from tests.support.processes import alive, kill_pids, wait_gone

SSHD = Path("/usr/sbin/sshd")
LOCK = Path("/run/lock/envsync-tests-net.lock")
# curve25519: the default post-quantum key exchange costs ~0.2 s more per connection here.
SSH_OPTIONS = "IdentitiesOnly=yes BatchMode=yes StrictHostKeyChecking=yes ConnectTimeout=5 LogLevel=ERROR"
SSH_OPTIONS += " KexAlgorithms=curve25519-sha256"
TOOLS = {"ip": "iproute2", "ssh": "openssh-client", "ssh-keygen": "openssh-client", "useradd": "passwd"}
SSHD_CONFIG = """\
ListenAddress {address}:22
HostKey {host_key}
PidFile {pid_file}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes yes
# Commands run with sshd's plain environment: nothing from the client or ~/.ssh/environment.
PermitUserEnvironment no
PrintMotd no
UseDNS no
MaxStartups 64
Subsystem sftp internal-sftp
"""


class HostsUnavailable(RuntimeError):
    """This machine cannot make test hosts: not root, or a tool is missing."""


class HostsError(RuntimeError):
    """Making or removing test hosts failed."""


@dataclass(frozen=True)
class Host:
    """One test host; `ssh(host, command)` runs a command on it as `user`."""

    name: str  # its network namespace
    address: str  # 198.18.X.n, sshd on port 22
    gateway: str  # 198.18.X.1: this machine, as the host reaches it
    user: str
    uid: int
    home: Path
    key: Path  # the client's private key (0600); the public key is next to it, `.pub`
    known_hosts: str  # "ADDRESS ssh-ed25519 AAAA...": this host's key, to verify it
    known_hosts_file: Path  # the lines of every host of the run, for UserKnownHostsFile
    sshd_pid: int
    link: str  # the veth end in the root namespace
    bridge: str
    netns_inode: int  # identifies the namespace even after its name is gone

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}"


def check_prerequisites(sshd: Path = SSHD) -> None:
    """Raise HostsUnavailable naming everything missing to make test hosts."""
    missing = [] if os.geteuid() == 0 else ["root (namespaces, users and sshd need it)"]
    missing += [f"`{tool}` (Debian: {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not os.access(sshd, os.X_OK):
        missing.append(f"{sshd} (Debian: apt-get install openssh-server)")
    if missing:
        raise HostsUnavailable("cannot make test SSH hosts; missing: " + ", ".join(missing))


def _run(*argv: str, timeout: float = 30.0) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostsError(f"`{' '.join(argv)}` did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).replace("\n", " | ")
        raise HostsError(f"`{' '.join(argv)}` exited {done.returncode}: {said}")
    return done.stdout


def ssh_argv(host: Host) -> list[str]:
    """The ssh client's argv for `host` (its key only, its host key verified), up to the command."""
    options = [
        *SSH_OPTIONS.split(),
        "GlobalKnownHostsFile=/dev/null",
        f"UserKnownHostsFile={host.known_hosts_file}",
    ]
    return ["ssh", "-F", "/dev/null", "-i", str(host.key), *[f"-o{o}" for o in options], host.target]


def ssh(host: Host, command: str, input: str | None = None, timeout: float = 30.0) -> CompletedProcess[str]:  # noqa: A002
    """Run `command` on `host` as its user (sshd hands it to `bash -c`); the finished ssh client."""
    try:
        return subprocess.run(
            [*ssh_argv(host), "--", command],
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise HostsError(f"ssh {host.target} {command!r} did not finish in {timeout:.0f} s") from None


def _end_pids(pids: list[int], grace: float = 3.0) -> list[int]:
    """SIGTERM each PID, SIGKILL those left after `grace` seconds; those still alive after that."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    kill_pids(wait_gone(pids, timeout=grace))
    return wait_gone(pids, timeout=grace)


def _end_namespace(ns: str, sshd: subprocess.Popen[bytes]) -> None:
    left = _end_pids([sshd.pid])
    with contextlib.suppress(subprocess.TimeoutExpired):
        sshd.wait(timeout=5)  # reaped, not a zombie
    left += _end_pids([int(pid) for pid in _run("ip", "netns", "pids", ns).split()])
    if left:
        raise HostsError(f"still running in {ns} after SIGKILL: {left}")


def _remove_user(user: str, home: Path) -> None:
    uid = pwd.getpwnam(user).pw_uid
    theirs = [p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]
    if left := _end_pids(theirs):
        raise HostsError(f"processes of {user} still running after SIGKILL: {left}")
    _run("userdel", "--remove", user)
    if home.exists():
        shutil.rmtree(home)


def _delete_link(link: str) -> None:
    if link in _link_names():
        _run("ip", "link", "del", link)


def _link_names() -> set[str]:
    return set(re.findall(r"^\d+: ([^:@\s]+)", _run("ip", "-o", "link", "show"), re.MULTILINE))


def _free_subnet() -> str:
    """A /24 of 198.18.0.0/15 that no address or route of the root namespace uses: '198.1x.X'."""
    seen = _run("ip", "-4", "-o", "addr", "show") + _run("ip", "-4", "route", "show", "table", "all")
    used = set(re.findall(r"\b(198\.1[89]\.\d{1,3})\.\d{1,3}", seen))
    free = [f"198.{b}.{c}" for b in (18, 19) for c in range(256) if f"198.{b}.{c}" not in used]
    if not free:
        raise HostsError("every /24 of 198.18.0.0/15 is already used on this machine")
    return secrets.choice(free)


_Undo = list[tuple[str, Callable[[], object]]]  # cleanup steps: what, how; run last first


def _undo(steps: _Undo) -> list[str]:
    """Run every step, last pushed first; a failure is recorded and the other steps still run."""
    problems = []
    while steps:
        what, step = steps.pop()
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - every step runs; each failure is reported
            problems.append(f"{what}: {exc}")
    return problems


def _make_bridge(undo: _Undo) -> tuple[str, str]:
    bridge = f"esb{secrets.token_hex(4)}"
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:  # held until the address is taken, so no other run picks it
        fcntl.flock(lock, fcntl.LOCK_EX)
        subnet = _free_subnet()
        _run("ip", "link", "add", bridge, "type", "bridge")
        undo.append((f"delete bridge {bridge}", lambda: _delete_link(bridge)))
        _run("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    return bridge, subnet


_Made = tuple[Host, subprocess.Popen[bytes], Path]  # a host, its sshd and sshd's log


def _make_host(
    index: int, bridge: str, subnet: str, base: Path, known_hosts_file: Path, sshd: Path, undo: _Undo
) -> _Made:
    token = secrets.token_hex(4)
    ns, link, user, address = f"envsync-t-{token}", f"esv{token}", f"est{token}", f"{subnet}.{index + 2}"
    _run("ip", "netns", "add", ns)
    undo.append((f"delete namespace {ns}", lambda: _run("ip", "netns", "del", ns)))
    _run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
    undo.append((f"delete link {link}", lambda: _delete_link(link)))
    _run("ip", "link", "set", link, "master", bridge, "up")
    _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    for device in ("eth0", "lo"):
        _run("ip", "-n", ns, "link", "set", device, "up")

    home, own = base / "home" / user, base / ns
    own.mkdir(mode=0o700)
    skel = ("--create-home", "--skel", str(base / "skel"), "--user-group", "--password", "*")
    _run("useradd", "--home-dir", str(home), *skel, "--shell", "/bin/bash", user)
    undo.append((f"remove user {user}", lambda: _remove_user(user, home)))
    account = pwd.getpwnam(user)
    home.chmod(0o700)  # like a home on its own machine: no other user looks in

    key, host_key = base / "keys" / user, own / "ssh_host_ed25519_key"
    for path, comment in ((key, f"{user}@envsync-tests"), (host_key, ns)):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
        path.chmod(0o600)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    authorized.chmod(0o600)
    for path in (ssh_dir, authorized):
        os.chown(path, account.pw_uid, account.pw_gid)
    kind, blob = Path(f"{host_key}.pub").read_text().split()[:2]
    known = f"{address} {kind} {blob}"
    with open(known_hosts_file, "a") as out:
        out.write(known + "\n")

    config = own / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(address=address, host_key=host_key, pid_file=own / "sshd.pid", user=user)
    )
    log = own / "sshd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(sshd), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    undo.append((f"end the processes in {ns}", lambda: _end_namespace(ns, process)))
    inode = os.stat(f"/run/netns/{ns}").st_ino
    host = Host(ns, address, f"{subnet}.1", user, account.pw_uid, home, key, known, known_hosts_file,
                process.pid, link, bridge, inode)  # fmt: skip
    return host, process, log


def _wait_ready(made: _Made, deadline: float) -> None:
    (host, process, log), said = made, "port 22 not accepting yet"
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise HostsError(f"sshd in {host.name} exited {process.returncode}: {' | '.join(tail)}")
        with contextlib.suppress(OSError), socket.create_connection((host.address, 22), timeout=1):
            done = ssh(host, "true", timeout=10)
            if done.returncode == 0:
                return
            said = done.stderr.strip().replace("\n", " | ")
        if time.monotonic() > deadline:
            raise HostsError(f"`ssh {host.target} true` did not succeed in time ({host.name}): {said}")
        time.sleep(0.05)


@contextlib.contextmanager
def ssh_hosts(n: int = 2, *, timeout: float = 20.0, sshd: Path = SSHD) -> Iterator[list[Host]]:
    """`n` hosts reachable by `ssh(host, ...)`, each ready to accept a command; removed on exit.

    Raises HostsUnavailable when this machine cannot make them (see check_prerequisites),
    HostsError when making one fails or, after the body ran, when a cleanup step failed.
    """
    check_prerequisites(sshd)
    undo: _Undo = []
    base = Path(tempfile.mkdtemp(prefix="envsync-hosts-"))
    undo.append((f"remove {base}", lambda: shutil.rmtree(base)))
    try:
        base.chmod(0o711)  # the users reach their homes below it, and nothing else
        for folder, mode in (("home", 0o711), ("keys", 0o700), ("skel", 0o755)):
            (base / folder).mkdir(mode=mode)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        bridge, subnet = _make_bridge(undo)
        known_hosts_file = base / "known_hosts"
        made = [_make_host(i, bridge, subnet, base, known_hosts_file, sshd, undo) for i in range(n)]
        deadline = time.monotonic() + timeout
        for one in made:
            _wait_ready(one, deadline)
        yield [host for host, _, _ in made]
    except BaseException as exc:
        for problem in _undo(undo):
            exc.add_note(f"cleanup of the test hosts: {problem}")
        raise
    if problems := _undo(undo):
        raise HostsError("cleanup of the test hosts failed: " + "; ".join(problems))


def leftovers(hosts: list[Host]) -> list[str]:
    """What of `hosts` still exists: namespaces, links, users, groups, processes, files."""
    namespaces = {line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()}
    links, found = _link_names(), []
    for host in hosts:
        found += [f"namespace {host.name}"] if host.name in namespaces else []
        found += [f"link {link}" for link in (host.link, host.bridge) if link in links]
        for kind, lookup in (("user", pwd.getpwnam), ("group", grp.getgrnam)):
            with contextlib.suppress(KeyError):
                lookup(host.user)
                found.append(f"{kind} {host.user}")
        found += [f"path {p}" for p in (host.home, host.key, host.known_hosts_file) if p.exists()]
        for process in psutil.process_iter(["uids"]):
            if process.info["uids"] and process.info["uids"].real == host.uid and alive(process.pid):
                found.append(f"process {process.pid} of uid {host.uid}")
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{process.pid}/ns/net").st_ino == host.netns_inode:
                    found.append(f"process {process.pid} in the namespace of {host.name}")
    return sorted(set(found))
