"""Progress of a sync for people: a spinner with the current step on a terminal, lines elsewhere."""

from __future__ import annotations

from typing import Any

from envsync.cli.app import App


class SyncView:
    """Renders sync ProgressEvents; use as a context manager around `sync(...)`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._status: Any = None
        self._last_phase = ""
        # A message line between two packages keeps showing how many are done.
        self._done = 0

    def __enter__(self) -> SyncView:
        if not self.app.json and self.app.console.is_terminal:
            self._status = self.app.console.status("preparing the environment …")
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def update(self, event: Any) -> None:
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
