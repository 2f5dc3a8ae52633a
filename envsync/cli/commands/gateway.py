"""launch, status, stop: the gateway commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envsync.cli.app import App
from envsync.cli.commands import hosts
from envsync.cli.views.render import esc
from envsync.env import installers
from envsync.gateway.spec import DEFAULT_MAX_KERNELS

if TYPE_CHECKING:
    from types import FrameType

    from envsync.cli.app import Parser, Subcommands
    from envsync.cli.views.panel import Panel
    from envsync.env.sync import Progress
    from envsync.ops.consent import ConsentRequest
    from envsync.ops.launch import Event, LaunchInfo, LockChanged
    from envsync.ops.preflight import Notice


def register(sub: Subcommands, common: Parser) -> None:
    """Add this module's commands to the `envsync` parser."""
    p = sub.add_parser(
        "launch",
        parents=[common],
        help="check the lock, build or reuse the env, and serve its kernel through Kernel Gateway",
        description=(
            "Before anything runs, warn about lock differences: a stale lock (re-locked, or an error "
            "with --frozen), changes since this machine last ran the project (hash changes at the same "
            "version need --yes), a drifted environment (repaired), a different Python. Then start "
            "Jupyter Kernel Gateway on 127.0.0.1 where only this notebook's kernel can run, print the "
            "URL and token a web editor connects with, and show a live status panel until Ctrl-C."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "security: a random token is made unless ENVSYNC_TOKEN (or --token) gives one of at least "
            "32 characters with 10 different ones; it reaches the gateway through its environment, never "
            "its command line, and is never logged. Clients send it as `Authorization: token …` (a "
            "browser's kernel WebSocket may use ?token=). Only --allow-origin's exact origin gets CORS "
            "headers. A non-loopback --ip needs --certfile and --keyfile. Request bodies over 1 MiB, "
            "more than --max-kernels kernels, and processes that kernels leave running after the "
            "gateway stops are refused or ended."
        ),
    )
    p.add_argument("notebook", type=Path)
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--ip", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--token", help="token clients must send (prefer ENVSYNC_TOKEN: argv is visible in ps)")
    p.add_argument("--allow-origin", metavar="URL", help="the web editor's origin, e.g. https://editor.example")
    p.add_argument("--insecure-allow-any-origin", action="store_true", help="permit --allow-origin '*' (any site may drive the kernel)")
    p.add_argument("--certfile", type=Path, help="TLS certificate (required for a non-loopback --ip)")
    p.add_argument("--keyfile", type=Path, help="TLS private key")
    p.add_argument(
        "--max-kernels",
        type=int,
        default=DEFAULT_MAX_KERNELS,
        metavar="N",
        help=f"kernels that may run at once; a start past it is refused with 429 (default {DEFAULT_MAX_KERNELS})",
    )
    p.add_argument("--frozen", action="store_true", help="never re-lock: a stale lock is an error")
    p.add_argument("--yes", action="store_true", help="go on even when files changed hashes at the same version")
    p.add_argument("--backend", choices=installers.names(), help="installer for a new environment (default uv)")
    p.add_argument(
        "--lock-updates",
        choices=("ask", "accept", "refuse"),
        help="a lock the web editor sends (POST /api/envsync/lock): ask here, accept, or refuse "
        "(default: ask when stdin is a terminal, refuse otherwise)",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON line (url, token, connection, kernel, fingerprint, pid) when ready"
    )
    hosts.ssh_arguments(p)
    p.set_defaults(handler=_launch)

    p = sub.add_parser("status", parents=[common], help="list running gateways (notebook, project, URL, kernels)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_status)

    p = sub.add_parser("stop", parents=[common], help="stop a running gateway and its kernels")
    p.add_argument("port", nargs="?", type=int, help="the gateway's port (needed when several run)")
    p.add_argument("--all", action="store_true", help="stop every gateway envsync started")
    p.set_defaults(handler=_stop)


class _Terminated(Exception):
    """SIGTERM or SIGHUP arrived: leave the serve loop the same way Ctrl-C does."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated()


def _launch(args: argparse.Namespace, app: App) -> int:
    from envsync.gateway.spec import ServeOptions
    from envsync.ops.consent import LockUpdates
    from envsync.ops.launch import LaunchHooks, LaunchRequest, launch

    # Started in the background by a shell, Python inherits SIGINT ignored; `kill -INT`
    # must still stop the gateway and its kernels cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.token:
        app.warn("a token on the command line is visible to other users in `ps`; prefer ENVSYNC_TOKEN")
    request = LaunchRequest(
        notebook=args.notebook,
        serve=ServeOptions(
            ip=args.ip,
            port=args.port,
            allow_origin=args.allow_origin,
            allow_insecure_origin=args.insecure_allow_any_origin,
            certfile=args.certfile,
            keyfile=args.keyfile,
            max_kernels=args.max_kernels,
        ),
        token=args.token or os.environ.get("ENVSYNC_TOKEN") or None,
        frozen=args.frozen,
        yes=args.yes,
        backend=args.backend,
        lock_updates=LockUpdates(args.lock_updates or ("ask" if _stdin_is_terminal() else "refuse")),
    )
    if args.hosts:
        return hosts.launch_on_hosts(args, app, request, stopping=_stopping)
    hooks = LaunchHooks(
        relock_progress=app.progress("uv: "),
        syncing=lambda: _sync_view(app),
        notice=lambda notice: _show_notice(app, notice),
        starting=lambda kernel: app.say(f"starting Kernel Gateway for [bold]{esc(kernel)}[/] …"),
    )
    with launch(request, settings=app.settings, hooks=hooks) as info, _stopping(app):
        _show_ready(app, info)
        _serve(app, info, args.notebook)
    app.say("stopped")
    return 0


@contextlib.contextmanager
def _stopping(app: App) -> Iterator[None]:
    """Until the block ends or Ctrl-C, SIGTERM or SIGHUP (a closed terminal) arrives; then say so."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_hup = signal.signal(signal.SIGHUP, _on_sigterm)
    try:
        yield
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
        app.say("stopping kernels and the gateway …")


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


@contextlib.contextmanager
def _sync_view(app: App) -> Iterator[Progress]:
    from envsync.cli.views.progress import SyncView

    with SyncView(app) as view:
        yield view.update


def _show_notice(app: App, notice: Notice) -> None:
    from envsync.cli.views.render import print_diff

    app.warn(notice.message)
    if notice.diff is not None and not app.json:
        print_diff(app, notice.diff, title="  lock changes")
    elif notice.diff is not None:
        app.stderr.write("WARNING changes: " + json.dumps(notice.diff.to_dict()["changes"]) + "\n")


def _show_ready(app: App, info: LaunchInfo) -> None:
    if app.json:
        app.emit_json(info.to_dict())
        return
    result = info.sync
    reuse = "reused" if result.reused else f"built in {result.seconds:.1f} s"
    app.say(f"environment {esc(result.env.name)} ({reuse}, {esc(result.packages)} packages, Python {esc(result.python_version)})")
    # The one place the token is shown: the user needs it to connect.
    app.stdout.write(f"Kernel Gateway ready: {info.url}  token: {info.token}\n")
    app.stdout.write(f"Editor connection: {info.connection}\n")
    app.stdout.flush()
    app.say("[dim]Ctrl-C stops the gateway and every kernel[/]")


def _serve(app: App, info: LaunchInfo, notebook: Path) -> None:
    """Show the panel until Ctrl-C; render what the watch reports about the gateway and the lock."""
    from envsync.cli.views.panel import Panel
    from envsync.ops.launch import GatewayStopped, LockChanged, NotebookUnreadable, Watch

    watch = Watch(info, notebook)
    with Panel(app, info.gateway, notebook=notebook, fingerprint=info.fingerprint, editor=info.editor) as panel:
        while True:
            for event in watch.poll():
                if isinstance(event, GatewayStopped):
                    panel.note("the gateway was stopped from outside (envsync stop)")
                    return
                if isinstance(event, NotebookUnreadable):
                    panel.note(f"the notebook changed on disk and cannot be read now: {event.message}")
                elif isinstance(event, LockChanged):
                    _lock_changed(app, panel, event)
                else:
                    _editor_event(app, panel, event)
            panel.refresh()
            time.sleep(0.5)


def _editor_event(app: App, panel: Panel, event: Event) -> None:
    """A lock from the web editor: ask for consent, then report the build."""
    from envsync.cli.views.render import diff_lines
    from envsync.ops.consent import LockUpdateAsked, LockUpdateFailed, LockUpdateReady, LockUpdateStarted

    if isinstance(event, LockUpdateAsked):
        d = event.request.diff
        lines = [f"the web editor sent another lock for {event.request.project} ({len(d.changes)} package changes):"]
        panel.note("\n".join([*lines, *diff_lines(d)]))
        if app.json:
            app.emit_json({"event": "lock-update-asked", "diff": d.to_dict()})
        with panel.paused():
            event.request.answer(_read_yes(app, event.request))
    elif isinstance(event, LockUpdateStarted):
        panel.note(f"building the environment of the editor's lock {event.fingerprint[:19]}… (running kernels keep theirs)")
        if app.json:
            app.emit_json({"event": "lock-update-started", "fingerprint": event.fingerprint, "diff": event.diff.to_dict()})
    elif isinstance(event, LockUpdateReady):
        panel.fingerprint = event.fingerprint
        panel.note(f"the editor's lock {event.fingerprint[:19]}… is served: new kernels run its environment")
        if app.json:
            app.emit_json({"event": "lock-update-ready", "fingerprint": event.fingerprint})
    elif isinstance(event, LockUpdateFailed):
        panel.note(f"the editor's lock could not be built: {event.message}; the previous environment is still served")
        if app.json:
            app.emit_json({"event": "lock-update-failed", "error": event.message})


def _read_yes(app: App, request: ConsentRequest) -> bool:
    """y/N on stdin until the request's deadline; no answer, end of input or anything else is no."""
    if sys.stdin is None:
        return False
    app.stderr.write(f"serve this lock from now on? [y/N] (within {max(0, request.deadline - time.monotonic()):.0f} s) ")
    app.stderr.flush()
    while (remaining := request.deadline - time.monotonic()) > 0:
        try:
            ready, _, _ = select.select([sys.stdin], [], [], min(remaining, 1.0))
        except (OSError, ValueError):
            return False
        if ready:
            return sys.stdin.readline().strip().lower() in ("y", "yes")
    return False


def _lock_changed(app: App, panel: Panel, event: LockChanged) -> None:
    """A collaborator's update synced in: show the diff; running kernels are left alone."""
    from envsync.cli.views.render import diff_lines

    d = event.diff
    lines = [f"the notebook's lock changed on disk ({len(d.changes)} package changes); running kernels keep the current env"]
    lines += diff_lines(d)
    if event.stale:
        lines.append("  the declared dependencies changed too: the lock is stale")
    lines.append("  to use it: stop (Ctrl-C) and run `envsync launch` again")
    panel.note("\n".join(lines))
    if app.json:
        app.emit_json({"event": "lock-changed", "diff": d.to_dict(), "stale": event.stale})


def _status(args: argparse.Namespace, app: App) -> int:
    from envsync.errors import EnvsyncError
    from envsync.gateway import process, registry

    rows: list[dict[str, Any]] = []
    for rec in registry.running(app.settings):
        try:
            ks = process.kernels(rec.as_running())
        except EnvsyncError:
            ks = []
        rows.append(
            {
                "port": rec.port,
                "url": rec.url,
                "pid": rec.pid,
                "notebook": rec.notebook,
                "project": rec.project,
                "kernel": rec.kernel_name,
                "fingerprint": rec.fingerprint,
                "started": rec.started_at,
                "kernels": [
                    {"id": k.get("id"), "state": k.get("execution_state"), "connections": k.get("connections")}
                    for k in ks
                ],
            }
        )
    if app.json:
        app.emit_json(rows)
        return 0
    if not rows:
        app.out_console.print("no gateway is running")
        return 0
    from rich.table import Table

    table = Table("port", "project", "notebook", "url", "kernels", "fingerprint", box=None)
    for r in rows:
        table.add_row(
            str(r["port"]), esc(r["project"]), esc(r["notebook"]), r["url"], str(len(r["kernels"])), r["fingerprint"][:19] + "…"
        )
    app.out_console.print(table)
    return 0


def _stop(args: argparse.Namespace, app: App) -> int:
    from envsync.gateway import registry

    stopped = registry.stop(app.settings, port=args.port, all=args.all)
    # A port nothing runs on is registry.stop's UsageError; here only "none at all" is left.
    if not stopped:
        app.say("no gateway is running")
        return 0
    for rec in stopped:
        app.say(f"stopped the gateway on port {esc(rec.port)} ({esc(rec.project)})")
    return 0
