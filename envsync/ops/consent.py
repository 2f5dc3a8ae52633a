"""A lock from the web editor, as the launch terminal sees it: the consent asked, the build reported.

`envsync.ops.editor.EditorControl` makes these; the CLI reads them from
`envsync.ops.launch.Watch` and answers each `ConsentRequest` (y/N at the terminal). The
request that asked waits for that answer, or for `CONSENT_TIMEOUT`, whichever comes first.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass

from envsync.lock.diff import LockDiff

CONSENT_TIMEOUT = 120.0


class LockUpdates(enum.StrEnum):
    """Whether a lock from the editor is taken: the values of `launch --lock-updates`."""

    ASK = "ask"
    ACCEPT = "accept"
    REFUSE = "refuse"


class EnvState(enum.StrEnum):
    READY = "ready"
    BUILDING = "building"
    FAILED = "failed"


class ConsentRequest:
    """An editor's lock waiting for the user's yes or no; `answer` may come from any thread."""

    def __init__(self, project: str, lock_diff: LockDiff, *, timeout: float = CONSENT_TIMEOUT) -> None:
        self.project = project
        self.diff = lock_diff
        self.deadline = time.monotonic() + timeout
        self._answer: bool | None = None
        self._given = threading.Event()

    def answer(self, yes: bool) -> None:
        if not self._given.is_set():
            self._answer = yes
            self._given.set()

    def wait(self) -> bool | None:
        """True or False once answered; None when the deadline passed first."""
        self._given.wait(max(0.0, self.deadline - time.monotonic()))
        return self._answer


@dataclass(frozen=True)
class LockUpdateAsked:
    request: ConsentRequest


@dataclass(frozen=True)
class LockUpdateStarted:
    fingerprint: str
    diff: LockDiff


@dataclass(frozen=True)
class LockUpdateReady:
    fingerprint: str


@dataclass(frozen=True)
class LockUpdateFailed:
    message: str


EditorEvent = LockUpdateAsked | LockUpdateStarted | LockUpdateReady | LockUpdateFailed
