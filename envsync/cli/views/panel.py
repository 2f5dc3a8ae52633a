"""The live status panel `envsync launch` shows while the gateway runs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envsync.cli.app import App

if TYPE_CHECKING:
    from types import TracebackType

    from rich.live import Live
    from rich.table import Table

    from envsync.gateway.process import RunningGateway
    from envsync.ops.editor import EditorControl


class Panel:
    """URL, project, fingerprint and the kernels' states, refreshed in place on a terminal.

    Off a terminal (or with --json) it stays silent except for notes, which are printed.
    """

    def __init__(
        self, app: App, gw: RunningGateway, *, notebook: Path, fingerprint: str, editor: EditorControl | None = None
    ) -> None:
        self.app = app
        self.editor = editor
        self.gw = gw
        self.notebook = notebook
        self.fingerprint = fingerprint
        self.notes: list[str] = []
        self._live: Live | None = None
        self._last_poll = 0.0
        self._kernels: list[dict[str, Any]] = []
        self._error = ""

    def __enter__(self) -> Panel:
        if not self.app.json and self.app.console.is_terminal:
            from rich.live import Live

            self._live = Live(self._render(), console=self.app.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def note(self, text: str) -> None:
        """Something the user must read: printed above the panel, kept."""
        self.notes.append(text)
        if self._live is not None:
            self._live.console.print(text)
        elif not self.app.json:
            self.app.console.print(text)
        else:
            self.app.stderr.write(text + "\n")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing while the user answers a question below the panel."""
        if self._live is None:
            yield
            return
        self._live.stop()
        try:
            yield
        finally:
            self._live.start()

    def refresh(self) -> None:
        """Redraw; the gateway is asked for its kernels at most once a second."""
        if self._live is None:
            return
        if time.monotonic() - self._last_poll >= 1.0:
            self._last_poll = time.monotonic()
            from envsync.errors import EnvsyncError
            from envsync.gateway.process import kernels

            try:
                self._kernels, self._error = kernels(self.gw), ""
            except EnvsyncError as exc:
                self._error = exc.message
        self._live.update(self._render())

    def _render(self) -> Table:
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("gateway", f"{self.gw.url}  (pid {self.gw.pid})")
        grid.add_row("notebook", str(self.notebook))
        grid.add_row("kernel", self.gw.kernel_name)
        grid.add_row("fingerprint", self.fingerprint)
        if self.editor is not None:
            grid.add_row("environment", self._env_state(self.editor))
        if self._error:
            grid.add_row("kernels", f"[red]{self._error}[/]")
        elif not self._kernels:
            grid.add_row("kernels", "[dim]none running[/]")
        for k in self._kernels:
            grid.add_row(
                "kernel " + str(k.get("id", ""))[:8],
                f"{k.get('execution_state', '?')}, {k.get('connections', 0)} connection(s), last activity {k.get('last_activity', '?')}",
            )
        return grid

    @staticmethod
    def _env_state(editor: EditorControl) -> str:
        from rich.markup import escape

        state = editor.state_body()
        text = str(state["state"])
        progress = state["progress"]
        if progress:
            text += f": {escape(str(progress['message']))}"
        if state["error"]:
            text += f" [red]{escape(str(state['error']))}[/]"
        if not state["verification"]["clean"]:
            text += " [red](files differ from the lock)[/]"
        return text
