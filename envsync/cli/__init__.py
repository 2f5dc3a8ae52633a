"""Command line: argument parsing, rendering and exit codes. No logic lives here.

`main(argv)` can be called from tests; it never raises for user errors, it returns the
exit code: 0 ok, 1 error, 2 usage, 3 drift or stale lock, 130 interrupted. The `envsync`
command is `envsync.__main__.entry`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from envsync import __version__
from envsync.cli.app import App, Parser
from envsync.cli.commands import env, gateway, hosts, manifest
from envsync.errors import EXIT_INTERRUPTED, EXIT_USAGE, EnvsyncError

DESCRIPTION = """\
Lock a notebook's dependencies inside the notebook, build the exact environment on
every collaborator's machine, and serve it through Jupyter Kernel Gateway.

typical flow:
  envsync init analysis.ipynb --python 3.11     add a manifest (and a lock) to a notebook
  envsync add analysis.ipynb "pandas>=2"        declare a dependency and re-lock
  envsync launch analysis.ipynb                 build or reuse the env, start the gateway

exit codes: 0 ok, 1 error, 2 usage, 3 drift or stale lock found by a check, 130 interrupted
"""


def _common(*, top: bool) -> Parser:
    common = Parser(add_help=False)
    verbose = common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and tool output on errors")
    home = common.add_argument("--home", metavar="DIR", help="envsync's data folder (default: ENVSYNC_HOME or the user data dir)")
    if not top:
        # Subcommands must not reset what was given before the command: their defaults are SUPPRESS.
        verbose.default = home.default = argparse.SUPPRESS
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    parser = Parser(
        prog="envsync",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"envsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    manifest.register(sub, common)
    env.register(sub, common)
    gateway.register(sub, common)
    hosts.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # argparse cannot put `init NB --python 3.11 pandas` back together: after an option
        # the remaining REQUIREMENT positionals arrive as "unknown". Give them back.
        target = getattr(args, "intermixed", None)
        if extra and target and not any(e.startswith("-") for e in extra):
            setattr(args, target, [*getattr(args, target), *extra])
        elif extra:
            parser.error("unrecognized arguments: " + " ".join(extra))
    except SystemExit as exc:
        return int(exc.code or 0)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    from envsync.notebook import accepted

    app = App.from_args(args)
    # A manifest accepted once is not checked in full again: see notebook/accepted.py.
    accepted.remember_in(lambda: app.settings.state_dir)
    try:
        return int(args.handler(args, app) or 0)
    except EnvsyncError as exc:
        app.error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        app.err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 (the one place that turns bugs into a message)
        app.bug(exc)
        return 1
    finally:
        accepted.remember_in(None)

