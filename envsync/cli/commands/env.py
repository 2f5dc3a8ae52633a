"""sync, check, kernels, envs: the environment and kernel commands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from envsync.cli.app import App
from envsync.cli.views.render import esc
from envsync.env import installers
from envsync.errors import EXIT_DRIFT

if TYPE_CHECKING:
    from envsync.cli.app import Parser, Subcommands
    from envsync.env.drift import DriftReport


def register(sub: Subcommands, common: Parser) -> None:
    """Add this module's commands to the `envsync` parser."""
    p = sub.add_parser(
        "sync",
        parents=[common],
        help="build or reuse the notebook's environment and register its kernel",
        description=(
            "Make sure an environment that matches the notebook's lock exists on this machine "
            "(hash-verified install; reused without running the installer when it is already "
            "built) and write the kernelspec envsync-<project> for it."
        ),
    )
    p.add_argument("notebook", type=Path)
    p.add_argument("--backend", choices=installers.names(), help="installer (default uv; pip = virtualenv + pip --require-hashes)")
    p.add_argument("--python", metavar="X.Y|PATH", help="use this interpreter instead of the one chosen from requires-python")
    p.add_argument("--register", choices=["user"], help="also register the kernel in your Jupyter data dir (JupyterLab, VS Code)")
    p.add_argument("--repair", action="store_true", help="bring a drifted environment back to the lock")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_sync)

    p = sub.add_parser(
        "check",
        parents=[common],
        help="compare the built environment with the lock (exit 3 when they differ)",
        description="Read the environment's installed distributions and compare them with the lock "
        "as it applies to this platform: missing, extra and different-version packages, and "
        "installed files that were edited or deleted since the install (size and mtime of each "
        "file; --deep rehashes them against each package's RECORD). Exit 0 in sync, 3 when it "
        "differs or is not built.",
    )
    p.add_argument("notebook", type=Path)
    p.add_argument("--deep", action="store_true", help="rehash every installed file instead of comparing sizes and mtimes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_check)

    p = sub.add_parser("kernels", parents=[common], help="list, remove or prune the kernels envsync registered")
    ks = p.add_subparsers(dest="kernels_command", metavar="ACTION", required=True)
    a = ks.add_parser("list", parents=[common], help="kernels envsync made (never python3 or others)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=_kernels_list)
    a = ks.add_parser("remove", parents=[common], help="remove one envsync kernel by name")
    a.add_argument("name")
    a.set_defaults(handler=_kernels_remove)
    a = ks.add_parser("prune", parents=[common], help="remove envsync kernels whose environment is gone")
    a.add_argument("--dry-run", action="store_true")
    a.set_defaults(handler=_kernels_prune)

    p = sub.add_parser("envs", parents=[common], help="list environments or remove unused ones")
    es = p.add_subparsers(dest="envs_command", metavar="ACTION", required=True)
    a = es.add_parser("list", parents=[common], help="every environment in the store with its state")
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=_envs_list)
    a = es.add_parser("gc", parents=[common], help="remove environments unused for DAYS (never one in use)")
    a.add_argument("--older-than", type=float, default=30.0, metavar="DAYS", help="default 30")
    a.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=_envs_gc)


def _sync(args: argparse.Namespace, app: App) -> int:
    from envsync.cli.views.progress import SyncView
    from envsync.ops import project
    from envsync.ops.sync import sync

    proj = project.load(args.notebook)
    lock = project.lock_of(proj)
    with SyncView(app) as view:
        result = sync(
            lock=lock, project=proj.manifest.project, notebook=args.notebook, settings=app.settings,
            backend=args.backend, python=args.python, register_user=args.register == "user",
            repair=args.repair, progress=view.update,
        )
    if app.json:
        app.emit_json(result.to_dict())
        return 0 if result.drift.clean else EXIT_DRIFT
    how = "reused" if result.reused and not result.installer_ran else f"ready in {result.seconds:.1f} s"
    app.say(f"environment {esc(result.env)} ({how}, {esc(result.packages)} packages, Python {esc(result.python_version)}, {esc(result.backend)})")
    if result.repaired:
        app.say("repaired: " + "; ".join(result.repaired))
    app.say(f"kernel [bold]{esc(result.kernel_name)}[/] registered")
    if not result.drift.clean:
        _print_drift(app, result.drift)
        app.warn("the environment differs from the lock: run `envsync sync --repair`")
        return EXIT_DRIFT
    return 0


def _print_drift(app: App, report: DriftReport) -> None:
    for d in report.differences:
        if d.kind == "missing":
            app.say(f"  [red]- {esc(d.name)} {esc(d.locked)}[/] (locked, not installed)")
        elif d.kind == "extra":
            app.say(f"  [yellow]+ {esc(d.name)} {esc(d.installed)}[/] (installed, not in the lock)")
        elif d.kind == "modified":
            shown = ", ".join(f"{f.path} ({f.problem})" for f in d.files[:3])
            more = f" and {len(d.files) - 3} more" if len(d.files) > 3 else ""
            app.say(f"  [magenta]! {esc(d.name)} {esc(d.installed)}[/] files differ from the install: {esc(shown)}{esc(more)}")
        else:
            app.say(f"  [magenta]~ {esc(d.name)} {esc(d.installed)}[/] (lock says {esc(d.locked)})")


def _check(args: argparse.Namespace, app: App) -> int:
    from envsync.env.drift import check_lock
    from envsync.ops import project

    proj = project.load(args.notebook)
    report = check_lock(lock=project.lock_of(proj), settings=app.settings, deep=args.deep)
    if app.json:
        app.emit_json(report.to_dict())
    elif report.clean:
        app.say(f"{esc(report.env)}: in sync with the lock ({report.seconds * 1000:.0f} ms)")
    else:
        app.say(f"{esc(report.env)} differs from the lock:")
        _print_drift(app, report)
        app.say("hint: `envsync sync --repair` brings it back to the lock")
    return 0 if report.clean else EXIT_DRIFT


def _kernels_list(args: argparse.Namespace, app: App) -> int:
    from envsync.jupyter import kernelspecs

    found = [k for k in kernelspecs.list_kernels(app.settings) if k.ours]
    if app.json:
        app.emit_json(
            [
                {"name": k.name, "location": k.location, "path": str(k.path), "display-name": k.display_name,
                 "project": k.project, "fingerprint": k.fingerprint, "notebook": k.notebook,
                 "env-exists": k.env_exists}
                for k in found
            ]
        )
        return 0
    if not found:
        app.out_console.print("no envsync kernels")
    for k in found:
        gone = "" if k.env_exists else "  [red](environment gone: `envsync kernels prune`)[/]"
        app.out_console.print(f"{esc(k.name)}  ({esc(k.location)})  {esc(k.display_name)}  {esc(k.path)}{gone}")
    return 0


def _kernels_remove(args: argparse.Namespace, app: App) -> int:
    from envsync.errors import KernelError
    from envsync.jupyter import kernelspecs

    removed = kernelspecs.remove(app.settings, args.name)
    if not removed:
        raise KernelError(f"no envsync kernel named {args.name!r}", hint="`envsync kernels list` shows them")
    for path in removed:
        app.say(f"removed {esc(path)}")
    return 0


def _kernels_prune(args: argparse.Namespace, app: App) -> int:
    from envsync.jupyter import kernelspecs

    gone = kernelspecs.prune(app.settings, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for k in gone:
        app.say(f"{verb} {esc(k.name)} ({esc(k.path)})")
    if not gone:
        app.say("nothing to prune")
    return 0


def _age(ts: float | None) -> str:
    if ts is None:
        return "never"
    days = (time.time() - ts) / 86400
    return f"{days:.1f} d ago" if days >= 1 else f"{days * 24:.1f} h ago"


def _envs_list(args: argparse.Namespace, app: App) -> int:
    from envsync.env import inventory

    envs = inventory.list_envs(app.settings, with_size=True)
    if app.json:
        app.emit_json(
            [
                {"key": e.key, "path": str(e.path), "state": e.state, "fingerprint": e.fingerprint,
                 "python": e.python_version, "backend": e.backend, "packages": e.packages,
                 "created": e.created, "last-used": e.last_used, "in-use": e.in_use, "size-bytes": e.size_bytes}
                for e in envs
            ]
        )
        return 0
    if not envs:
        app.out_console.print("no environments")
        return 0
    from rich.table import Table

    table = Table("key", "state", "python", "packages", "size", "last used", "in use", box=None)
    for e in envs:
        size = f"{(e.size_bytes or 0) / 1e6:.0f} MB" if e.size_bytes is not None else "?"
        table.add_row(e.key, e.state, e.python_version or "?", str(e.packages), size, _age(e.last_used), "yes" if e.in_use else "")
    app.out_console.print(table)
    return 0


def _envs_gc(args: argparse.Namespace, app: App) -> int:
    from envsync.env import inventory
    from envsync.errors import UsageError

    # A negative or NaN age would make every unused environment "old enough".
    if not args.older_than >= 0:
        raise UsageError(f"--older-than {args.older_than:g} is not a number of days (0 or more)")
    res = inventory.gc(app.settings, older_than_days=args.older_than, dry_run=args.dry_run)
    if app.json:
        app.emit_json(
            {"dry-run": res.dry_run,
             "entries": [{"key": e.key, "path": str(e.path), "removed": e.removed, "reason": e.reason} for e in res.entries]}
        )
        return 0
    verb = "would remove" if res.dry_run else "removed"
    for e in res.entries:
        if e.removed or res.dry_run and e.reason not in ("in use", "busy", "recently used"):
            app.say(f"{verb} {esc(e.key)} ({esc(e.reason)})")
    kept = [e for e in res.kept if e.reason in ("in use", "busy")]
    for e in kept:
        app.say(f"kept {esc(e.key)} ({esc(e.reason)})")
    if not res.entries:
        app.say("no environments")
    return 0
