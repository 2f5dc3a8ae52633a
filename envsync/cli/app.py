"""What every command handler gets: settings, output helpers and the error renderer."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

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
        if _plain(self.stderr):
            return PlainConsole(self.stderr, 80)  # type: ignore[return-value]
        from rich.console import Console

        return Console(file=self.stderr, highlight=False, soft_wrap=True)

    @cached_property
    def out_console(self) -> Console:
        """Rich console on stdout, for what a command reports as its result."""
        # Piped output is read by people in logs and by grep: never truncate a path or URL there.
        if _plain(self.stdout):
            return PlainConsole(self.stdout, 240)  # type: ignore[return-value]
        from rich.console import Console

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
            self.console.print(f"[bold yellow]WARNING[/] {escape_markup(text)}", markup=True)

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
                self.console.print(f"[dim]{escape_markup(prefix + line)}[/]", markup=True)

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


def _plain(stream: TextIO) -> bool:
    """No terminal and no colour asked for: what rich would print is the text without its markup."""
    if os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE"):
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


_OPENING = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape_markup(text: str) -> str:
    """`text` shown as written when printed as rich markup (rich's own `escape`, without importing rich)."""
    text = _OPENING.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


# rich's markup tag, with the backslashes before it: an odd number escapes the tag.
_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")


def strip_markup(text: str) -> str:
    """What rich shows of `text` without styles: tags dropped, escaped tags kept as written."""
    if "[" not in text:
        return text
    out: list[str] = []
    position = 0
    for match in _TAG.finditer(text):
        start = match.start()
        if start > position:
            out.append(text[position:start].replace("\\[", "["))
        slashes, escaped = divmod(len(match.group(1)), 2)
        out.append("\\" * slashes + (f"[{match.group(2)}]" if escaped else ""))
        position = match.end()
    out.append(text[position:].replace("\\[", "["))
    return "".join(out)


class PlainConsole:
    """The console calls envsync makes, for output that reaches no terminal, without importing rich.

    Strings are written as rich writes them there (no styles, no wrapping); anything else
    (a table) goes to a rich console made on first use.
    """

    is_terminal = False

    def __init__(self, file: TextIO, width: int) -> None:
        self.file = file
        self.width = width

    def print(self, *objects: object, markup: bool = True, **kwargs: Any) -> None:
        texts = [o for o in objects if isinstance(o, str)]
        if kwargs or len(texts) != len(objects):
            self._rich.print(*objects, markup=markup, **kwargs)
            return
        self.file.write(" ".join(strip_markup(t) if markup else t for t in texts) + "\n")
        self.file.flush()

    @cached_property
    def _rich(self) -> Console:
        from rich.console import Console

        return Console(file=self.file, highlight=False, soft_wrap=True, width=self.width)
