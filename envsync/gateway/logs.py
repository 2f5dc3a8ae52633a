"""The gateway child's log: bounded in size, with runs of similar lines collapsed into a count.

The parent opens the log file and hands it to the child as stdout and stderr. In the child,
`install` routes every logging handler and `sys.stdout`/`sys.stderr` through one
`CappedLog`, which keeps the file under its cap by dropping the oldest half when a write
would cross it, and puts a `RepeatFilter` on each handler so that a flood of alike
requests or tracebacks costs one line and a count, not megabytes. `install_log_redaction`
keeps the token out of every line.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

# Numbers, hex ids and durations differ from one request to the next; the rest of a line
# says what happened.
_VARYING = re.compile(r"[0-9a-fA-F]{8,}|\d+")
_SHAPE_CHARS = 160
_MAX_KEYS = 512
_TOKEN_PARAM = re.compile(r"(?i)([?&;]token=)[^&;\s#\"']*")


def redact(text: str, token: str) -> str:
    """Replace the token, and any `token=` query value, with `[secret]`."""
    if token:
        text = text.replace(token, "[secret]")
    return _TOKEN_PARAM.sub(r"\1[secret]", text)


def install_log_redaction(token: str) -> None:
    """Redact every log record of this process when it is made, whoever logs it."""
    # A record factory sees all records (tornado.access, the app's own logger, tracebacks'
    # messages) before any handler formats them; a handler filter would miss handlers
    # that are added later.
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a bad format is the logger's problem
            return record
        cleaned = redact(message, token)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)


def shape(message: str) -> str:
    """What stays the same across a run of alike lines: the text with numbers and ids masked."""
    return _VARYING.sub("#", message.split("\n", 1)[0])[:_SHAPE_CHARS]


class CappedLog(io.TextIOBase):
    """A text stream on file descriptor `fd` that never lets the file grow past `max_bytes`."""

    def __init__(self, fd: int, max_bytes: int) -> None:
        super().__init__()
        self._fd = fd
        self._max = max_bytes
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")[-(self._max // 2) :]
        with self._lock:
            try:
                end = os.lseek(self._fd, 0, os.SEEK_END)
                if end + len(data) > self._max:
                    self._compact(end)
                os.write(self._fd, data)
            except OSError:
                pass  # a log that cannot be written must not stop the gateway
        return len(text)

    def _compact(self, end: int) -> None:
        """Keep the newest quarter of the file, from a line start, behind a note."""
        keep = self._max // 4
        try:
            tail = os.pread(self._fd, keep, max(0, end - keep))
        except OSError:  # opened write-only: start afresh
            tail = b""
        newline = tail.find(b"\n")
        tail = tail[newline + 1 :] if newline >= 0 else b""
        note = f"[envsync] the log reached {self._max} bytes: older lines were dropped\n".encode()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, note + tail)

    def flush(self) -> None:
        return None


class RepeatFilter(logging.Filter):
    """Lets the first of a run of alike records through, then only counts them for `window` s.

    Alike: the same logger, level and `shape`. The next record of that shape after the
    window carries the count of the ones left out. On top, no more than `per_second`
    records pass in any second; the next one that does says how many were dropped.
    """

    def __init__(
        self, window: float = 10.0, per_second: int = 50, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self.per_second = per_second
        self._clock = clock
        self._runs: dict[tuple[str, int, str], list[float]] = {}  # key -> [first seen, left out]
        self._second = -1.0
        self._passed = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        try:
            key = (record.name, record.levelno, shape(record.getMessage()))
        except (TypeError, ValueError, KeyError):
            return True
        run = self._runs.get(key)
        if run is not None and now - run[0] < self.window:
            run[1] += 1
            return False
        if not self._within_rate(now):
            return False
        notes = []
        if run is not None and run[1]:
            notes.append(f"{int(run[1])} more like this in the {self.window:.0f} s before")
        if self._dropped:
            notes.append(f"{self._dropped} other lines dropped: more than {self.per_second} a second")
            self._dropped = 0
        if notes:
            record.msg, record.args = f"{record.getMessage()} ({'; '.join(notes)})", None
        self._runs[key] = [now, 0]
        if len(self._runs) > _MAX_KEYS:
            self._forget(now)
        return True

    def _within_rate(self, now: float) -> bool:
        if now - self._second >= 1.0:
            self._second, self._passed = now, 0
        self._passed += 1
        if self._passed > self.per_second:
            self._dropped += 1
            return False
        return True

    def _forget(self, now: float) -> None:
        for key in [k for k, run in self._runs.items() if now - run[0] >= self.window]:
            del self._runs[key]
        while len(self._runs) > _MAX_KEYS:
            del self._runs[next(iter(self._runs))]


def install(max_bytes: int, loggers: Iterable[logging.Logger], fd: int = 2) -> CappedLog:
    """Send this process's output and the handlers of `loggers` (and root) through one capped stream."""
    stream = CappedLog(fd, max_bytes)
    sys.stdout = sys.stderr = stream
    for logger in {logging.getLogger(), *loggers}:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(stream)
            handler.addFilter(RepeatFilter())
    return stream
