"""init, add, remove, lock, show, diff, index: manifest and lock commands (export and import: interop.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from envsync.cli.app import App
from envsync.cli.commands import interop

if TYPE_CHECKING:
    from envsync.cli.app import Parser, Subcommands
    from envsync.ops.project import LockResult


def register(sub: Subcommands, common: Parser) -> None:
    """Add this module's commands to the `envsync` parser."""
    def cmd(name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=description or help_, parents=[common])

    p = cmd(
        "init",
        "add a manifest and a lock to a notebook (creates the notebook if missing)",
        "Add metadata.envsync to NOTEBOOK: a project name, a Python range, declared dependencies "
        "and a lock resolved for every target platform. Creates an empty notebook if NOTEBOOK does not exist.",
    )
    p.add_argument("notebook", type=Path)
    p.add_argument("dependencies", nargs="*", metavar="REQUIREMENT", help='e.g. "pandas>=2" matplotlib')
    p.add_argument("--python", metavar="X.Y|RANGE", help="Python the lock covers: 3.11, or a range such as '>=3.11,<3.14' (default: this interpreter's minor)")
    p.add_argument("--project", metavar="NAME", help="project slug; the kernel is named envsync-NAME (default: from the file name)")
    p.add_argument("--environment", dest="environments", action="append", metavar="TARGET",
                   help="target platform, repeatable (default: linux-x86_64 linux-aarch64 macos-arm64 macos-x86_64 windows-x86_64)")
    p.add_argument("--index", metavar="URL", help="PEP 503 index to resolve from (must be allowed on this machine)")
    p.add_argument("--no-lock", action="store_true", help="write the manifest without resolving")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_init, intermixed="dependencies")

    p = cmd("add", "declare dependencies and re-lock")
    p.add_argument("notebook", type=Path)
    p.add_argument("requirements", nargs="+", metavar="REQUIREMENT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_add, intermixed="requirements")

    p = cmd("remove", "drop declared dependencies and re-lock")
    p.add_argument("notebook", type=Path)
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_remove, intermixed="names")

    p = cmd(
        "lock",
        "resolve the declared dependencies into the notebook's lock",
        "Resolve (keeping current pins unless asked to upgrade) and write the lock. "
        "With --check, only tell whether the lock is current: exit 0 if so, 3 if stale (no network).",
    )
    p.add_argument("notebook", type=Path)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--upgrade", action="store_true", help="allow every package to move to its newest version")
    g.add_argument("--upgrade-package", action="append", default=[], metavar="P", help="allow P to move (repeatable)")
    g.add_argument("--check", action="store_true", help="exit 3 if the lock is stale, 0 if current; writes nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_lock)

    p = cmd("show", "show declared dependencies, the lock summary, fingerprint and staleness")
    p.add_argument("notebook", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_show)

    p = cmd("diff", "lock differences between two versions of a notebook",
            "Per package: added, removed, upgraded, downgraded, and file-hash changes at the same version "
            "(a re-upload or a tampered lock), plus requires-python and target changes. Exit 0 either way.")
    p.add_argument("old", type=Path, metavar="OLD.ipynb")
    p.add_argument("new", type=Path, metavar="NEW.ipynb")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_diff)

    interop.register(sub, common)

    p = cmd("index", "allow a non-default package index on this machine")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    a = isub.add_parser("allow", help="trust URL as a package index for notebooks opened here", parents=[common])
    a.add_argument("url")
    a.set_defaults(handler=_index_allow)
    lst = isub.add_parser("list", help="list allowed indexes", parents=[common])
    lst.set_defaults(handler=_index_list)


def render_lock_result(app: App, res: LockResult, *, verb: str, extra: dict[str, object] | None = None) -> int:
    from envsync.cli.views.render import esc, print_diff

    m = res.manifest
    if app.json:
        app.emit_json(
            {
                "notebook": str(res.path),
                "written": res.written,
                "project": m.project,
                "fingerprint": m.lock.fingerprint if m.lock else None,
                "packages": len(m.lock.packages) if m.lock else 0,
                "diff": res.diff.to_dict(),
            }
            | ({"notes": list(res.notes)} if res.notes else {})
            | (extra or {})
        )
        return 0
    for note in res.notes:
        app.say(f"note: {esc(note)}")
    if m.lock:
        print_diff(app, res.diff, title="lock changes")
        state = "written" if res.written else "unchanged"
        app.say(f"{verb} {esc(res.path)}: {len(m.lock.packages)} packages, fingerprint {m.lock.fingerprint[:19]}… ({state})")
    else:
        app.say(f"{verb} {esc(res.path)} (not locked yet: run `envsync lock {esc(res.path)}`)")
    return 0


def _init(args: argparse.Namespace, app: App) -> int:
    from envsync.ops import project

    res = project.init(
        args.notebook,
        settings=app.settings,
        python=args.python,
        project=args.project,
        dependencies=args.dependencies,
        environments=args.environments,
        index=args.index,
        lock_now=not args.no_lock,
        progress=app.progress("uv: "),
    )
    return render_lock_result(app, res, verb="created" if res.created else "initialised")


def _add(args: argparse.Namespace, app: App) -> int:
    from envsync.ops import project

    res = project.add(project.load(args.notebook), args.requirements, settings=app.settings, progress=app.progress("uv: "))
    return render_lock_result(app, res, verb="locked")


def _remove(args: argparse.Namespace, app: App) -> int:
    from envsync.ops import project

    res = project.remove(project.load(args.notebook), args.names, settings=app.settings, progress=app.progress("uv: "))
    return render_lock_result(app, res, verb="locked")


def _lock(args: argparse.Namespace, app: App) -> int:
    from envsync.cli.views.render import esc
    from envsync.ops import project

    _check_package_names(args.upgrade_package)
    proj = project.load(args.notebook)
    if args.check:
        from envsync.ops.interop import header_drift

        project.check_lock_current(proj)
        drift = header_drift(proj)
        if app.json:
            doc = {"notebook": str(args.notebook), "stale": False, "fingerprint": proj.manifest.lock.fingerprint if proj.manifest.lock else None}
            app.emit_json(doc | ({"warnings": [drift]} if drift else {}))
        else:
            if drift:
                app.warn(drift)
            app.say(f"{esc(args.notebook)}: lock is current")
        return 0
    res = project.relock(
        proj,
        proj.manifest,
        settings=app.settings,
        upgrade=args.upgrade,
        upgrade_packages=tuple(args.upgrade_package),
        progress=app.progress("uv: "),
    )
    return render_lock_result(app, res, verb="locked")


def _check_package_names(names: list[str]) -> None:
    """Each --upgrade-package is a package name (it is handed on to uv's command line)."""
    from envsync import rules
    from envsync.errors import UsageError

    for name in names:
        if not rules.is_package_name(name):
            raise UsageError(f"--upgrade-package {rules.shown(name)!r} is not a package name")


def _show(args: argparse.Namespace, app: App) -> int:
    from envsync.cli.views.render import esc
    from envsync.ops import project

    summary = project.show(project.load(args.notebook)).to_dict()
    if app.json:
        app.emit_json(summary)
        return 0
    out = app.out_console
    out.print(f"[bold]{esc(summary['notebook'])}[/]  project [bold]{esc(summary['project'])}[/]  kernel {esc(summary['kernel'])}")
    out.print(f"requires-python {esc(summary['requires-python'])}   targets {esc(', '.join(summary['environments']))}")
    out.print(f"covered pythons: {esc(', '.join(summary['pythons']))}")
    if summary["index"] != "https://pypi.org/simple":
        out.print(f"index {esc(summary['index'])}")
    out.print("declared: " + (esc(", ".join(summary["dependencies"])) or "(nothing)"))
    if not summary["locked"]:
        out.print("[yellow]not locked[/]: run `envsync lock`")
        return 0
    state = "[bold yellow]STALE[/] (run `envsync lock`)" if summary["stale"] else "[green]current[/]"
    out.print(f"lock: {len(summary['packages'])} packages, {state}")
    out.print(f"fingerprint {summary['fingerprint']}")
    for p in summary["packages"]:
        marker = f"  [dim]; {esc(p['marker'])}[/]" if p["marker"] else ""
        out.print(f"  {esc(p['name'])} {esc(p['version'])}{marker}")
    return 0


def _diff(args: argparse.Namespace, app: App) -> int:
    from envsync.cli.views.render import print_diff
    from envsync.ops import project

    d = project.diff_notebooks(args.old, args.new)
    if app.json:
        app.emit_json(d.to_dict())
        return 0
    print_diff(app, d, title=f"{args.old} → {args.new}")  # print_diff escapes the title
    if d.hash_changes:
        app.warn(f"{len(d.hash_changes)} package(s) changed file hashes without changing version: review before running")
    return 0


def _index_allow(args: argparse.Namespace, app: App) -> int:
    from envsync.errors import UsageError
    from envsync.settings import allow_index

    if not args.url.startswith(("https://", "http://")):
        raise UsageError(f"{args.url!r} is not an http(s) URL")
    path = allow_index(app.settings, args.url)
    from envsync.cli.views.render import esc

    app.say(f"allowed {esc(args.url)} (recorded in {esc(path)})")
    return 0


def _index_list(args: argparse.Namespace, app: App) -> int:
    for url in app.settings.allowed_indexes:
        print(url)
    return 0
