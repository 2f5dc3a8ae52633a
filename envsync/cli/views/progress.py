"""Progress of a sync for people: a spinner with the current step on a terminal, lines elsewhere."""

from __future__ import annotations

import threading
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
        self._spinner: list[threading.Thread] = []  # the threads that draw it
        self._last_phase = ""
        # A message line between two packages keeps showing how many are done.
        self._done = 0

    def __enter__(self) -> SyncView:
        if not self.app.json and self.app.console.is_terminal:
            self._status = self.app.console.status("preparing the environment …")
            self._spin()
        return self

    def _spin(self) -> None:
        assert self._status is not None
        before = set(threading.enumerate())
        self._status.start()
        self._spinner = [t for t in threading.enumerate() if t not in before]

    def _pause(self) -> None:
        """Stop the spinner and wait for its thread to end (rich only tells it to)."""
        assert self._status is not None
        self._status.stop()
        for thread in self._spinner:
            thread.join(timeout=1.0)
        self._spinner = []

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
            # Keep a record of each phase above the spinner, not every download line, and
            # every step of the file check, during which the spinner stops: the check shares
            # its work with the other cores by forking, which is safe only in a process with
            # no other thread. It starts again at the next step.
            if (event.phase != self._last_phase and event.phase != "download") or event.phase == "verify":
                self.app.console.print(f"[dim]{event.message}[/]")
            if event.phase == "verify":
                self._pause()
            elif self._last_phase == "verify":
                self._spin()
        elif not self.app.json and (event.phase != self._last_phase or event.phase == "install"):
            self.app.console.print(f"[dim]{text}[/]")
        self._last_phase = event.phase
