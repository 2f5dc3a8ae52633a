"""export and import: the lock and the manifest to and from other tools' files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from envsync.cli.app import App

if TYPE_CHECKING:
    from envsync.cli.app import Parser, Subcommands
    from envsync.formats.k8s import K8sExport
    from envsync.ops.project import Project


def register(sub: Subcommands, common: Parser) -> None:
    """Add `export` and `import` to the `envsync` parser."""
    def cmd(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=description, parents=[common])

    p = cmd("export", "write the lock as pylock.toml, hashed requirements, Binder or Kubernetes files, or a PEP 723 block",
            "pylock: PEP 751 pylock.toml with each file's URL looked up on the index (uv pip install -r and pip accept it). "
            "requirements: name==version lines with --hash for one platform (default: this machine). "
            "binder: requirements.txt (linux-x86_64, lowest Python) and runtime.txt into the folder -o names. "
            "k8s: a Containerfile building the linux-x86_64 env with hashes, its requirements.txt, a README and "
            "kernels/<kernel>/kernel.json for gateway_provisioners' KubernetesProvisioner, into the folder -o names "
            "(image tag from the lock's fingerprint; docs/scale-out.md). "
            "pep723: the declared dependencies as a `# /// script` block (with -o x.py, written into that script; "
            "with -o x.ipynb, into its juv cell or a new first cell).")
    p.add_argument("notebook", type=Path)
    p.add_argument("--format", choices=["pylock", "requirements", "binder", "k8s", "pep723"], default="pylock")
    p.add_argument("--environment", metavar="TARGET", help="platform for --format requirements (default: this machine)")
    p.add_argument("--python", metavar="X.Y", help="Python for --format requirements (default: lowest the lock covers)")
    p.add_argument("--registry", metavar="HOST[/PATH]",
                   help="k8s: the registry the cluster pulls from, put before the image name (e.g. ghcr.io/acme)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here instead of stdout (a folder for binder and k8s)")
    p.set_defaults(handler=_export)

    p = cmd("import", "add a manifest from requirements.txt, pyproject.toml, pylock.toml, a PEP 723 script or a juv/marimo notebook",
            "Create or fill NOTEBOOK's manifest from SOURCE and lock it, keeping the versions SOURCE had locked "
            "(juv's uv.lock, a pylock, hashed requirements). SOURCE may be NOTEBOOK itself when it carries "
            "juv's `# /// script` cell or marimo's header. Each decision is printed as a note.")
    p.add_argument("notebook", type=Path)
    p.add_argument("source", type=Path)
    p.add_argument("--python", metavar="X.Y|RANGE", help="3.11, or a range such as '>=3.11,<3.14' (default: the lowest the source admits)")
    p.add_argument("--project", metavar="NAME")
    p.add_argument("--index", metavar="URL", help="PEP 503 index to resolve from, instead of the source's (must be allowed)")
    p.add_argument("--environment", dest="environments", action="append", metavar="TARGET", help="target platform, repeatable")
    p.add_argument("--extra", dest="extras", action="append", default=[], metavar="NAME", help="pyproject: take this optional-dependencies entry (repeatable)")
    p.add_argument("--group", dest="groups", action="append", default=[], metavar="NAME", help="pyproject: take this dependency group (repeatable)")
    p.add_argument("--all-extras", action="store_true", help="pyproject: take every optional-dependencies entry")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--keep-juv-header", dest="juv_header", action="store_const", const="keep",
                   help="juv notebook: make its `# /// script` cell declare what the manifest does (add/remove keep it in step)")
    g.add_argument("--drop-juv-header", dest="juv_header", action="store_const", const="drop",
                   help="juv notebook: remove its `# /// script` cell")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_import)


def _export(args: argparse.Namespace, app: App) -> int:
    from envsync.cli.views.render import esc
    from envsync.fsutil import atomic_write_text
    from envsync.ops import interop, project

    _check_export_options(args)
    proj = project.load(args.notebook)
    if args.format == "pep723":
        return _export_pep723(args, app, proj)
    lock = project.lock_of(proj)
    if args.format == "binder":
        files, lost = interop.binder_files(lock)
        args.output.mkdir(parents=True, exist_ok=True)
        for name, body in files.items():
            atomic_write_text(args.output / name, body)
        for line in lost:
            app.warn(line)
        app.say(f"wrote {esc(args.output / 'requirements.txt')} and {esc(args.output / 'runtime.txt')}")
        return 0
    if args.format == "k8s":
        return _export_k8s(args, app, interop.k8s_files(proj, lock, registry=args.registry))
    if args.format == "pylock":
        # Export looks files up on each package's index: only on indexes this machine allowed.
        for index in sorted({p.index for p in lock.packages if p.index}):
            app.settings.require_index_allowed(index)
        from envsync.formats.pylock import export_pylock

        text = export_pylock(lock, dependencies=proj.manifest.dependencies)
    else:
        text = interop.requirements_for(lock, environment=args.environment, python=args.python)
    if args.output:
        atomic_write_text(args.output, text)
        app.say(f"wrote {esc(args.output)}")
    else:
        sys.stdout.write(text)
    return 0


def _export_k8s(args: argparse.Namespace, app: App, export: K8sExport) -> int:
    """Write every file of the k8s export (all made before the first is written)."""
    from envsync.cli.views.render import esc
    from envsync.fsutil import atomic_write_text

    for name, body in export.files.items():
        target = args.output / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, body)
        app.say(f"wrote {esc(target)}")
    for line in export.notes:
        app.say(f"note: {esc(line)}")
    app.say(f"next: docker build -t {esc(export.image)} -f {esc(args.output / 'Containerfile')} {esc(args.output)}, "
            f"push it, and install the kernelspec where Kernel Gateway runs ({esc(args.output / 'README.md')})")
    return 0


def _export_pep723(args: argparse.Namespace, app: App, proj: Project) -> int:
    """The declared dependencies as a `# /// script` block: to stdout, into a script or into a notebook."""
    from envsync.cli.views.render import esc
    from envsync.fsutil import atomic_write_text
    from envsync.ops import interop

    text, lost = interop.export_pep723(proj)
    for line in lost:
        app.warn(line)
    if args.output and args.output.suffix == ".ipynb":
        app.say(f"note: {esc(interop.header_into_notebook(args.output, text))}")
    elif args.output:
        existing = args.output.read_text(encoding="utf-8") if args.output.exists() and args.output.suffix == ".py" else None
        atomic_write_text(args.output, interop.script_with_block(existing, text))
        app.say(f"wrote {esc(args.output)}")
    else:
        sys.stdout.write(text)
    return 0


def _check_export_options(args: argparse.Namespace) -> None:
    """Refuse an export command line that cannot mean anything, before reading the notebook."""
    from envsync.errors import UsageError
    from envsync.lock.targets import KNOWN_PYTHONS, TARGETS

    if args.format != "requirements" and (args.environment or args.python):
        raise UsageError("--environment and --python apply to --format requirements only")
    if args.format == "binder" and not args.output:
        raise UsageError("--format binder writes two files: name their folder with -o DIR")
    if args.format == "k8s" and not args.output:
        raise UsageError("--format k8s writes a Containerfile, requirements and a kernelspec: name their folder with -o DIR")
    if args.format in ("binder", "k8s") and args.output.exists() and not args.output.is_dir():
        raise UsageError(f"-o {args.output} is a file: --format {args.format} writes into a folder")
    if args.registry is not None and args.format != "k8s":
        raise UsageError("--registry applies to --format k8s only")
    if args.environment and args.environment not in TARGETS:
        raise UsageError(f"unknown target environment {args.environment!r}", hint=f"choose from: {', '.join(TARGETS)}")
    if args.python and args.python not in KNOWN_PYTHONS:
        raise UsageError(f"unknown Python version {args.python!r}", hint=f"choose from: {', '.join(KNOWN_PYTHONS)}")


def _import(args: argparse.Namespace, app: App) -> int:
    from envsync.ops import interop

    res = interop.import_source(
        args.notebook,
        args.source,
        settings=app.settings,
        python=args.python,
        project=args.project,
        index=args.index,
        environments=args.environments,
        extras=tuple(args.extras),
        groups=tuple(args.groups),
        all_extras=args.all_extras,
        juv_header=args.juv_header,
        progress=app.progress("uv: "),
    )
    from envsync.cli.views.render import esc

    for note in res.notes:
        app.say(f"note: {esc(note)}")
    from envsync.cli.commands.manifest import render_lock_result

    return render_lock_result(app, res.result, verb="imported into", extra={"source-kind": res.kind, "notes": list(res.notes)})
