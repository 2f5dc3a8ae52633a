"""Progress of a sync for people: a spinner with the current step on a terminal, lines elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from envsync.cli.app import App

if TYPE_CHECKING:
    from types import TracebackType

    from rich.status import Status

    from envsync.env.sync import ProgressEvent


class SyncView:
    """Renders sync ProgressEvents; use as a context manager around `sync(...)`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._status: Status | None = None
        self._last_phase = ""
        # A message line between two packages keeps showing how many are done.
        self._done = 0

    def __enter__(self) -> SyncView:
        if not self.app.json and self.app.console.is_terminal:
            self._status = self.app.console.status("preparing the environment …")
            self._status.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.__exit__(exc_type, exc, tb)

    def update(self, event: ProgressEvent) -> None:
        """Show `event`: the spinner's text on a terminal, a line per phase elsewhere."""
        text = event.message
        if event.total:
            if event.done is not None:
                self._done = event.done
            text += f" ({self._done}/{event.total})"
        if self._status is not None:
            self._status.update(text)
            # Keep a record of each phase above the spinner, not every download line.
            if event.phase != self._last_phase and event.phase not in ("download",):
                self.app.console.print(f"[dim]{event.message}[/]")
        elif not self.app.json and (event.phase != self._last_phase or event.phase == "install"):
            self.app.console.print(f"[dim]{text}[/]")
        self._last_phase = event.phase
