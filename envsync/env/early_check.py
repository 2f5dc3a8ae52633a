"""The file check of `envsync check` and `envsync sync`, started as the command starts.

Both commands end in a stat of every file the env's record lists (tens of milliseconds
for a data-science stack), and before it they spend longer importing their own code and
reading the notebook. Which env they will check is usually known from the last time:
the env each notebook's check last compared is kept in `state/last-checked-envs.json`.
As the command starts, a forked child stats that env's recorded files while this
process imports and reads; the check takes the child's answer only when it is for the
very env it chose, read from the same record file (device, inode, size and mtime).
Every other case (a first run, another lock or interpreter, a damaged hint, a child that
failed) checks as before: the hint only says which work to start early, never what to
conclude.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envsync import procfork

if TYPE_CHECKING:
    from envsync.env import files
    from envsync.env.files import RecordKey

HINTS = "last-checked-envs.json"
KEEP = 200  # notebooks remembered
COMMANDS = frozenset({"check", "sync"})
_VALUED = frozenset({"--home", "--backend", "--python", "--register"})  # options that take a value


@dataclass
class Started:
    state_dir: Path
    notebook: str
    hinted: str | None
    work: procfork.Ahead | None
    compared: str | None = None  # the first env this command compared


_started: Started | None = None


def start(argv: Sequence[str]) -> None:
    """Start the check of the env a `check` or `sync` of this notebook last compared, if any."""
    global _started
    command = _command(argv)
    if command is None:
        return
    home, notebook = command
    from envsync import settings

    state = (Path(home) if home else settings.default_home()) / "state"  # as the command line takes it
    hinted = _hints(state).get(notebook)
    work = procfork.Ahead(_check_env, hinted) if hinted else None
    _started = Started(state, notebook, hinted, work)


def take(env: Path, key: RecordKey | None) -> tuple[files.Problems, dict[str, int], float] | None:
    """The early check's problems, file counts a distribution and seconds, when it checked `env`'s record `key`.

    Taken once: a second check in the same command (after a repair) stats again.
    """
    if _started is None:
        return None
    if _started.compared is None:
        _started.compared = str(env)
    work, _started.work = _started.work, None
    if work is None:
        return None
    got = work.result()
    if got is None or key is None or _started.hinted != str(env):
        return None
    early_key, problems, counts, seconds = got[0]
    return (problems, counts, seconds) if early_key == key else None


def finish() -> None:
    """End an early check not taken, and remember the env this command compared."""
    global _started
    started, _started = _started, None
    if started is None:
        return
    if started.work is not None:
        started.work.cancel()
    if started.compared is not None and started.compared != started.hinted:
        _remember(started, started.compared)


def _command(argv: Sequence[str]) -> tuple[str | None, str] | None:
    """(--home, absolute notebook path) of a `check` or `sync` command line; None for any other."""
    home, words = None, []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if arg == "--deep" or arg == "--":
            return None  # a deep check hashes (nothing to start early); after `--`, leave it to argparse
        if name in _VALUED:
            value = value if eq else next(args, "")
            if name == "--home":
                home = value
        elif not arg.startswith("-"):
            words.append(arg)
    if len(words) < 2 or words[0] not in COMMANDS:
        return None
    return home, os.path.abspath(words[1])


def _hints(state: Path) -> dict[str, str]:
    try:
        data = json.loads((state / HINTS).read_bytes())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _remember(started: Started, env: str) -> None:
    """Keep `env` as the notebook's hint, newest last (read again: other commands may have added theirs)."""
    from envsync.fsutil import atomic_write_text

    if not started.state_dir.is_dir():  # a command that compared an env has written its state folder
        return
    hints = _hints(started.state_dir)
    hints.pop(started.notebook, None)
    hints[started.notebook] = env
    kept = dict(list(hints.items())[-KEEP:])
    try:
        atomic_write_text(started.state_dir / HINTS, json.dumps(kept, indent=0) + "\n")
    except OSError:
        pass  # a hint not kept only means no early start next time


def _check_env(env: str) -> tuple[RecordKey | None, files.Problems, dict[str, int], float]:
    """In the child: the record's identity, the fast check of every recorded file, and how long it took."""
    import time

    from envsync.env import files

    start = time.perf_counter()
    path = Path(env)
    key = files.record_key(path)
    record = files.load_columns(path) if key is not None else None
    if record is None:
        return None, {}, {}, 0.0
    problems = files.fast_check(path, record, split=False)  # this process's other core imports
    counts = {name: len(cols.paths) for name, cols in record.items()}
    return key, problems, counts, time.perf_counter() - start
