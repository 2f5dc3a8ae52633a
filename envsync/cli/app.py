"""What every command handler gets: settings, output helpers and the error renderer."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from envsync.errors import EXIT_USAGE, EnvsyncError, ToolError
from envsync.settings import Settings, load_settings

if TYPE_CHECKING:
    # rich is imported when something is shown, so `envsync --help` starts without it.
    from rich.console import Console

    # What `add_subparsers` returns: each commands module registers its commands on it.
    Subcommands = argparse._SubParsersAction["Parser"]


class Parser(argparse.ArgumentParser):
    """argparse with envsync's usage error: the usage, one `ERROR` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"ERROR {message}\n")
        raise SystemExit(EXIT_USAGE)


@dataclass
class App:
    verbose: bool
    json: bool
    home: Path | None
    backend: str | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> App:
        return cls(
            verbose=bool(getattr(args, "verbose", False)),
            json=bool(getattr(args, "json", False)),
            home=Path(args.home) if getattr(args, "home", None) else None,
            backend=getattr(args, "backend", None),
        )

    @cached_property
    def settings(self) -> Settings:
        return load_settings(home=self.home, backend=self.backend, verbose=self.verbose)

    @cached_property
    def console(self) -> Console:
        """Rich console on stderr for people; stdout stays for data."""
        from rich.console import Console

        return Console(file=self.stderr, highlight=False, soft_wrap=True)

    @cached_property
    def out_console(self) -> Console:
        """Rich console on stdout, for what a command reports as its result."""
        from rich.console import Console

        # Piped output is read by people in logs and by grep: never truncate a path or URL there.
        width = None if self.stdout.isatty() else 240
        return Console(file=self.stdout, highlight=False, soft_wrap=True, width=width)

    def emit_json(self, data: object) -> None:
        """One JSON document on stdout (keys are kebab-case, as README says)."""
        self.stdout.write(json.dumps(data, sort_keys=False) + "\n")
        self.stdout.flush()

    def say(self, text: str) -> None:
        """A line for a person (rich markup allowed), on stderr so pipes get data only."""
        if not self.json:
            self.console.print(text)

    def warn(self, text: str) -> None:
        """A warning; `text` is plain (never read as markup)."""
        if self.json:
            self.stderr.write(f"WARNING {text}\n")
        else:
            from rich.markup import escape

            self.console.print(f"[bold yellow]WARNING[/] {escape(text)}", markup=True)

    def err(self, text: str) -> None:
        """One `ERROR` line on stderr."""
        self.stderr.write(f"ERROR {text}\n")

    def progress(self, prefix: str = "") -> Callable[[str], None] | None:
        """A callback that shows a tool's progress lines on one status line."""
        if self.json:
            return None

        def show(line: str) -> None:
            line = line.strip()
            # uv lists each added/removed pin; the lock diff shows those better.
            if line and not line.startswith(("+ ", "- ", "~ ")):
                from rich.markup import escape

                self.console.print(f"[dim]{escape(prefix + line)}[/]", markup=True)

        return show

    def error(self, exc: EnvsyncError) -> None:
        """An error for the user: one `ERROR` line and its hint; details with --verbose."""
        self.stderr.write(f"ERROR {exc.message}\n")
        if exc.hint:
            self.stderr.write(f"hint: {exc.hint}\n")
        if self.verbose:
            if isinstance(exc, ToolError) and exc.command:
                self.stderr.write("command: " + " ".join(exc.command) + "\n")
            if exc.detail:
                self.stderr.write(exc.detail.rstrip() + "\n")
            traceback.print_exception(exc, file=self.stderr)

    def bug(self, exc: BaseException) -> None:
        """An error envsync did not foresee: one line, the traceback only with --verbose."""
        self.stderr.write(f"ERROR unexpected {type(exc).__name__}: {exc}\n")
        if self.verbose:
            traceback.print_exception(exc, file=self.stderr)
        else:
            self.stderr.write("hint: run again with --verbose and report the traceback\n")
