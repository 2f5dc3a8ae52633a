"""Other hosts over OpenSSH: who to reach (`user@host[:port]`) and the one place ssh command lines are built.

envsync runs the system's `ssh` client, so the user's own keys, agent, `~/.ssh/config`
and `known_hosts` apply as they do for any ssh command. It never answers a prompt
(`BatchMode`): an unknown host key or a key that needs a passphrase without an agent is
an error to fix with ssh itself, not something envsync accepts on the user's behalf.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from envsync.errors import UsageError

# A login name and a host name or IPv4 address: nothing an ssh option or a shell could read.
_TARGET = re.compile(
    r"(?:(?P<user>[a-z_][a-z0-9_.-]{0,31})@)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class Target:
    """One host to reach: `user@host:port` (user and port optional)."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        m = _TARGET.fullmatch(text.strip())
        port = int(m["port"]) if m and m["port"] else None
        if m is None or (port is not None and not 1 <= port <= 65535):
            raise UsageError(
                f"not a host to reach over ssh: {text!r}",
                hint="write user@host or user@host:port (a host name or IPv4 address)",
            )
        return cls(host=m["host"], user=m["user"], port=port)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


def parse_targets(text: str) -> list[Target]:
    """`--hosts a,b,c` as targets, each once, in the order given."""
    targets: list[Target] = []
    for part in text.split(","):
        if part.strip():
            target = Target.parse(part)
            if target not in targets:
                targets.append(target)
    if not targets:
        raise UsageError("--hosts names no host", hint="write --hosts user@host1,user@host2")
    return targets


@dataclass(frozen=True)
class SshOptions:
    """How to reach every host: an identity file and an ssh_config file, both optional."""

    key: Path | None = None
    config: Path | None = None
    connect_timeout: int = CONNECT_TIMEOUT

    def check(self) -> SshOptions:
        if self.key is not None and not self.key.is_file():
            raise UsageError(f"--ssh-key {self.key}: no such file")
        # `-F /dev/null` (no config at all) is a common choice: any existing path will do.
        if self.config is not None and not self.config.exists():
            raise UsageError(f"--ssh-config {self.config}: no such file")
        return self


def command(target: Target, remote: Sequence[str], options: SshOptions) -> list[str]:
    """`ssh ... target -- remote`, the remote argv quoted for the login shell that runs it."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={options.connect_timeout}"]
    argv += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    if options.config is not None:
        argv += ["-F", str(options.config)]
    if options.key is not None:
        argv += ["-i", str(options.key), "-o", "IdentitiesOnly=yes"]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    if target.user is not None:
        argv += ["-l", target.user]
    return [*argv, "--", target.host, " ".join(_quote(part) for part in remote)]


def _quote(part: str) -> str:
    # `~/` stays unquoted at the start, so the remote shell finds the user's home.
    if part.startswith("~/") and re.fullmatch(r"~/[A-Za-z0-9._/-]*", part):
        return part
    return shlex.quote(part)
