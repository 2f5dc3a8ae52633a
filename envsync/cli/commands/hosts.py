"""hosts prepare, hosts check: the notebook's env on other hosts, over ssh."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from envsync.cli.app import App
from envsync.cli.views.render import esc
from envsync.errors import EXIT_DRIFT

if TYPE_CHECKING:
    from envsync.cli.app import Parser, Subcommands
    from envsync.ops.hosts import HostState
    from envsync.ops.launch import LaunchRequest
    from envsync.ops.project import Project
    from envsync.ssh import SshOptions, Target

EPILOG = (
    "ssh: envsync runs the system's ssh client without prompts (BatchMode), so your keys, agent, "
    "~/.ssh/config and known_hosts apply; a host whose key is not in known_hosts is refused until "
    "you add it (ssh-keyscan, or connect once with ssh). On each host envsync installs itself into "
    "~/.local/share/envsync-host/ (a private venv of the host's python3, 3.11 or newer, with "
    "envsync's dependencies at the versions running here, from the lock's first index) and keeps "
    "its environments in that user's own envsync home."
)


def ssh_arguments(p: argparse.ArgumentParser) -> None:
    """--hosts, --ssh-key and --ssh-config, shared with `launch`."""
    p.add_argument(
        "--hosts",
        metavar="USER@HOST,...",
        help="hosts to run the notebook's kernels on, comma-separated (user@host[:port])",
    )
    p.add_argument(
        "--ssh-key",
        type=Path,
        metavar="FILE",
        help="identity file for every host (default: ssh's own choice)",
    )
    p.add_argument(
        "--ssh-config", type=Path, metavar="FILE", help="ssh_config file to use instead of ~/.ssh/config"
    )


def register(sub: Subcommands, common: Parser) -> None:
    """Add `hosts` to the `envsync` parser."""
    p = sub.add_parser(
        "hosts", parents=[common], help="build the notebook's environment on other hosts, or compare theirs"
    )
    hs = p.add_subparsers(dest="hosts_command", metavar="ACTION", required=True)
    for name, help_, description in (
        (
            "prepare",
            "build or reuse the notebook's environment on each host and register its kernel there",
            "Over ssh, in parallel: install envsync on each host when it is missing, send the notebook, and "
            "build or reuse its locked environment there (hash-verified, as `envsync sync` does here). A host "
            "that cannot match the lock is reported with the reason. Exit 0 when every host is ready and in "
            "sync, 3 when any is not, 1 when none is.",
        ),
        (
            "check",
            "compare each host's environment with the lock (exit 3 when any differs)",
            "Over ssh, in parallel: ask each host's envsync how its environment of this lock compares with "
            "it (fingerprint, Python, packages and files) without building anything. Prints one row a host; "
            "exit 0 when every host matches, 3 when any differs, has no environment or cannot be reached.",
        ),
    ):
        a = hs.add_parser(name, parents=[common], help=help_, description=description, epilog=EPILOG)
        a.add_argument("notebook", type=Path)
        ssh_arguments(a)
        if name == "prepare":
            a.add_argument(
                "--repair", action="store_true", help="bring a host's drifted environment back to the lock"
            )
        a.add_argument("--json", action="store_true")
        a.set_defaults(handler=_prepare if name == "prepare" else _check)


def targets_and_options(args: argparse.Namespace) -> tuple[list[Target], SshOptions]:
    from envsync import ssh
    from envsync.errors import UsageError

    if not args.hosts:
        raise UsageError("--hosts is required", hint="write --hosts user@host1,user@host2")
    return ssh.parse_targets(args.hosts), ssh.SshOptions(key=args.ssh_key, config=args.ssh_config).check()


def run_on_hosts(args: argparse.Namespace, app: App, *, build: bool) -> tuple[Project, list[HostState]]:
    """The notebook's env on each host (built when `build`), saying each host's steps as they happen."""
    from envsync.ops import hosts, project

    targets, options = targets_and_options(args)
    proj = project.load(args.notebook)
    project.lock_of(proj)  # a notebook without a current lock is refused here, not on every host

    def step(target: Target, what: str) -> None:
        app.say(f"[dim]{esc(target)}: {esc(what)}[/]")

    files = _launcher_files() if build else None
    states = hosts.prepare(
        proj,
        hosts.notebook_bytes(args.notebook),
        targets,
        options,
        app.settings,
        build=build,
        repair=bool(getattr(args, "repair", False)),
        on_step=None if app.json else step,
        launcher_files=files,
    )
    return proj, states


def _launcher_files() -> dict[str, str] | None:
    try:
        from envsync.gateway.remote import launcher_files
    except ImportError:  # the remote kernel launcher is not installed here: hosts get no launcher
        return None
    return launcher_files()


def _prepare(args: argparse.Namespace, app: App) -> int:
    proj, states = run_on_hosts(args, app, build=True)
    return _report(app, proj, states, title="ready")


def _check(args: argparse.Namespace, app: App) -> int:
    proj, states = run_on_hosts(args, app, build=False)
    return _report(app, proj, states, title="in sync")


def _report(app: App, proj: Project, states: list[HostState], *, title: str) -> int:
    from envsync.errors import EXIT_ERROR

    lock = proj.manifest.lock
    assert lock is not None
    matching = [s for s in states if s.clean and s.fingerprint == lock.fingerprint]
    if app.json:
        app.emit_json({"fingerprint": lock.fingerprint, "hosts": [s.to_dict() for s in states]})
    else:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("host", "fingerprint", "python", "state"):
            table.add_column(column)
        for s in states:
            table.add_row(
                esc(s.target),
                esc((s.fingerprint or "-")[:19]),
                esc(s.python_version or "-"),
                _state_text(s, lock.fingerprint),
            )
        app.out_console.print(table)
        app.say(f"{len(matching)} of {len(states)} hosts {title} for {esc(lock.fingerprint[:19])}")
    if not matching and title == "ready":
        return EXIT_ERROR
    return 0 if len(matching) == len(states) else EXIT_DRIFT


def _state_text(s: HostState, fingerprint: str) -> str:
    if not s.ok:
        return f"[red]left out: {esc(s.reason)}[/]"
    if s.fingerprint != fingerprint:
        return "[red]a different lock[/]"
    if not s.clean:
        kinds = sorted({f"{d.get('name')} {d.get('kind')}" for d in s.drift.get("differences", [])})
        return f"[magenta]differs: {esc(', '.join(kinds))}[/]"
    return "[green]in sync[/]"


def launch_on_hosts(
    args: argparse.Namespace,
    app: App,
    request: LaunchRequest,
    *,
    stopping: Callable[[App], contextlib.AbstractContextManager[None]],
) -> int:
    """`launch --hosts`: make the hosts ready, serve their kernels, wait for Ctrl-C or the gateway's end."""
    from envsync.ops.launch_hosts import launch_on_hosts as launch

    targets, options = targets_and_options(args)

    def step(target: Target, what: str) -> None:
        app.say(f"[dim]{esc(target)}: {esc(what)}[/]")

    with launch(
        request, targets, options, settings=app.settings,
        notice=lambda n: app.warn(n.message), on_step=None if app.json else step,
    ) as info, stopping(app):  # fmt: skip
        if app.json:
            app.emit_json(info.to_dict())
        else:
            for state in info.left_out:
                app.warn(f"{state.target} is left out: {state.reason or 'its env differs from the lock'}")
            hosts_text = ", ".join(f"{s.target} (Python {s.python_version})" for s in info.ready)
            app.say(f"kernels run on {len(info.ready)} hosts: {esc(hosts_text)}")
            app.stdout.write(f"Kernel Gateway ready: {info.url}  token: {info.token}\n")
            app.stdout.write(f"Editor connection: {info.connection}\n")
            app.stdout.flush()
            app.say("[dim]Ctrl-C stops the gateway and every kernel on every host[/]")
        while info.gateway.process is None or info.gateway.process.poll() is None:
            time.sleep(0.5)
        app.say("the gateway stopped")
    app.say("stopped")
    return 0
