"""launch, status, stop: the gateway commands."""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from envsync.cli.app import App
from envsync.cli.views.render import esc


def register(sub: Any, common: argparse.ArgumentParser) -> None:
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
            "security: a random token is made unless ENVSYNC_TOKEN (or --token) gives one; it reaches "
            "the gateway through its environment, never its command line, and is never logged. "
            "Only --allow-origin's exact origin gets CORS headers. A non-loopback --ip needs "
            "--certfile and --keyfile."
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
    p.add_argument("--frozen", action="store_true", help="never re-lock: a stale lock is an error")
    p.add_argument("--yes", action="store_true", help="go on even when files changed hashes at the same version")
    p.add_argument("--backend", choices=["uv", "pip"], help="installer for a new environment (default uv)")
    p.add_argument("--json", action="store_true", help="print one JSON line (url, token, kernel, fingerprint, pid) when ready")
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


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _launch(args: argparse.Namespace, app: App) -> int:
    from envsync.cli.views.progress import SyncView
    from envsync.cli.views.render import print_diff
    from envsync.env import history
    from envsync.env.sync import sync
    from envsync.gateway import process, registry
    from envsync.lock.targets import pythons_in_range
    from envsync.ops import preflight

    # Started in the background by a shell, Python inherits SIGINT ignored; `kill -INT`
    # must still stop the gateway and its kernels cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    token = args.token or os.environ.get("ENVSYNC_TOKEN") or None
    if args.token:
        app.warn("a token on the command line is visible to other users in `ps`; prefer ENVSYNC_TOKEN")
    config = process.GatewayConfig(
        kernel_name="pending",
        jupyter_data_dir=app.settings.jupyter_data_dir,
        ip=args.ip,
        port=args.port,
        token=token,
        allow_origin=args.allow_origin,
        allow_insecure_origin=args.insecure_allow_any_origin,
        certfile=args.certfile,
        keyfile=args.keyfile,
        working_dir=Path(os.path.abspath(args.notebook)).parent,
    )
    process.validate(config)  # refuse insecure settings before any slow work
    if args.port:
        process.check_port(args.ip, args.port)

    settings = app.settings
    proj = preflight.load_for_launch(args.notebook)
    before = history.last_run(settings, proj.manifest.project)
    pre = preflight.check(
        proj, settings=settings, frozen=args.frozen, yes=args.yes, last_run=before,
        progress=app.progress("uv: "),
    )
    for notice in pre.notices:
        app.warn(notice.message)
        if notice.diff is not None and not app.json:
            print_diff(app, notice.diff, title="  lock changes")
        elif notice.diff is not None:
            app.stderr.write("WARNING changes: " + json.dumps(notice.diff.to_dict()["changes"]) + "\n")
    manifest = pre.project.manifest
    with SyncView(app) as view:
        result = sync(
            lock=pre.lock, project=manifest.project, notebook=args.notebook, settings=settings,
            backend=args.backend, repair=True, hold=True, progress=view.update,
        )
    try:
        if result.repaired:
            app.warn("the environment had drifted from the lock (" + "; ".join(result.repaired) + "): repaired")
        locked_for = pythons_in_range(pre.lock.requires_python)[0]
        running_minor = ".".join(result.python_version.split(".")[:2])
        if running_minor != locked_for:
            app.warn(f"the lock was resolved for Python {locked_for}; this environment runs Python {result.python_version}")
        config = process.GatewayConfig(**{**config.__dict__, "kernel_name": result.kernel_name})
        app.say(f"starting Kernel Gateway for [bold]{esc(result.kernel_name)}[/] …")
        gw = process.start(config)
    except BaseException:
        if result.hold is not None:
            result.hold.release()
        raise
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Closing the terminal sends SIGHUP: stop as cleanly as for Ctrl-C.
    previous_hup = signal.signal(signal.SIGHUP, _on_sigterm)
    try:
        registry.record(settings, gw, notebook=Path(os.path.abspath(args.notebook)), project=manifest.project, fingerprint=pre.lock.fingerprint)
        info = {
            "url": gw.url,
            "token": gw.token,
            "kernel": result.kernel_name,
            "fingerprint": pre.lock.fingerprint,
            "pid": gw.pid,
            "notebook": os.path.abspath(args.notebook),
            "project": manifest.project,
            "env": str(result.env),
            "python": result.python_version,
        }
        if app.json:
            app.emit_json(info)
        else:
            reuse = "reused" if result.reused else f"built in {result.seconds:.1f} s"
            app.say(f"environment {esc(result.env.name)} ({reuse}, {esc(result.packages)} packages, Python {esc(result.python_version)})")
            # The one place the token is shown: the user needs it to connect.
            app.stdout.write(f"Kernel Gateway ready: {gw.url}  token: {gw.token}\n")
            app.stdout.flush()
            app.say("[dim]Ctrl-C stops the gateway and every kernel[/]")
        _serve(app, gw, args.notebook, pre.lock)
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
        app.say("stopping kernels and the gateway …")
        process.stop(gw)
        registry.forget(settings, gw.port)
        if result.hold is not None:
            result.hold.release()
    app.say("stopped")
    return 0


def _serve(app: App, gw: Any, notebook: Path, lock: Any) -> None:
    """Wait for Ctrl-C; watch the notebook's lock and the gateway while we do."""
    from envsync.cli.views.panel import Panel

    # No baseline: the first pass compares the notebook with the lock being served, so a
    # collaborator's lock that arrived during the build is reported too.
    seen: tuple[int, int] | None = None
    with Panel(app, gw, notebook=notebook, fingerprint=lock.fingerprint) as panel:
        while True:
            if gw.process is not None and gw.process.poll() is not None:
                from envsync.errors import GatewayError
                from envsync.gateway.process import log_tail

                if gw.process.returncode == 0:
                    # `envsync stop` (or a SIGTERM to the gateway): a requested, clean stop.
                    panel.note("the gateway was stopped from outside (envsync stop)")
                    return
                raise GatewayError(
                    f"Kernel Gateway exited unexpectedly (exit {gw.process.returncode})",
                    detail=log_tail(gw.log_path) if gw.log_path else None,
                )
            now = _stat(notebook)
            if seen is None or now != seen:
                seen = now
                _lock_changed(app, panel, notebook, lock)
            panel.refresh()
            time.sleep(1.0)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _lock_changed(app: App, panel: Any, notebook: Path, running: Any) -> None:
    """A collaborator's update synced in: show the diff; running kernels are left alone."""
    from envsync.cli.views.render import diff_lines
    from envsync.errors import EnvsyncError
    from envsync.lock.model import diff
    from envsync.ops import project

    try:
        new = project.load(notebook).manifest
    except EnvsyncError as exc:
        panel.note(f"the notebook changed on disk and cannot be read now: {exc.message}")
        return
    d = diff(running, new.lock)
    if d.empty and not new.lock_is_stale:
        return
    lines = [f"the notebook's lock changed on disk ({len(d.changes)} package changes); running kernels keep the current env"]
    lines += diff_lines(d)
    if new.lock_is_stale:
        lines.append("  the declared dependencies changed too: the lock is stale")
    lines.append("  to use it: stop (Ctrl-C) and run `envsync launch` again")
    panel.note("\n".join(lines))
    if app.json:
        app.emit_json({"event": "lock-changed", "diff": d.to_dict(), "stale": new.lock_is_stale})


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
    if not stopped:
        app.say("no gateway is running" if args.port is None else f"no envsync gateway on port {args.port}")
        return 1 if args.port is not None else 0
    for rec in stopped:
        app.say(f"stopped the gateway on port {esc(rec.port)} ({esc(rec.project)})")
    return 0
