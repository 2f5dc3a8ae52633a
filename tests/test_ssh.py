"""Hosts named on the command line, and the ssh command lines built for them."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from envsync import ssh
from envsync.errors import UsageError


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("alice@gpu1.example.org", "alice", "gpu1.example.org", None),
        ("198.18.0.2", None, "198.18.0.2", None),
        ("bob@198.18.0.3:2222", "bob", "198.18.0.3", 2222),
    ],
)
def test_a_host_is_user_at_host_with_an_optional_port(
    text: str, user: str | None, host: str, port: int | None
) -> None:
    target = ssh.Target.parse(text)
    assert (target.user, target.host, target.port) == (user, host, port)
    assert str(target) == text


@pytest.mark.parametrize(
    "text",
    [
        "-oProxyCommand=touch /tmp/x",
        "a@-oProxyCommand=x",
        "a b@host",
        "a@host;reboot",
        "a@host:0",
        "a@host:70000",
        "a@",
        "@h",
        "a@h/x",
    ],
)
def test_anything_ssh_or_a_shell_could_read_as_an_option_or_a_command_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="not a host to reach over ssh"):
        ssh.Target.parse(text)


def test_hosts_are_taken_once_each_in_order() -> None:
    assert [str(t) for t in ssh.parse_targets("a@h1, b@h2,a@h1,")] == ["a@h1", "b@h2"]
    with pytest.raises(UsageError, match="names no host"):
        ssh.parse_targets(" , ")


def test_the_command_never_prompts_and_quotes_the_remote_words(tmp_path: Path) -> None:
    key = tmp_path / "id"
    argv = ssh.command(
        ssh.Target.parse("u@h:2222"), ["sh", "-c", "echo $HOME; rm -rf /", "x y"], ssh.SshOptions(key=key)
    )
    assert argv[:3] == ["ssh", "-o", "BatchMode=yes"]
    assert argv[argv.index("-i") + 1] == str(key) and "IdentitiesOnly=yes" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "u"
    assert argv[-3:-1] == ["--", "h"]
    # The remote login shell reads the last word: it must split back into exactly what was given.
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo $HOME; rm -rf /", "x y"]


def test_a_missing_key_or_config_file_is_one_usage_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--ssh-key .*: no such file"):
        ssh.SshOptions(key=tmp_path / "nope").check()
