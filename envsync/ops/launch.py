"""`launch` as an operation: check, sync, serve, and undo each step on the way out.

`launch` is a context manager: inside it the gateway serves the notebook's kernel; on
leaving it (normally, by an error or by Ctrl-C) the registry entry is dropped, the
gateway and its kernels are stopped and the environment's hold is released, whichever
of those steps had been reached. It never prints: what a user should see goes through
`LaunchHooks`, and `Watch` reports what happens while it serves as events.

While it serves, the gateway's editor API (`/api/envsync*`) is answered by an
`envsync.ops.editor.EditorControl` over a control socket; a lock the editor sends is
taken per `LaunchRequest.lock_updates`. A web editor connects with one string,
`LaunchInfo.connection`, printed as `Editor connection: <url>/#token=<token>`: the
gateway's base URL with the token in the fragment (a browser never sends a fragment to
any server, so it stays out of logs and Referer headers); the editor sends it back as
`Authorization: token <token>`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsync import proc, procfork, procinfo
from envsync.errors import EnvsyncError, GatewayError
from envsync.gateway import control, process, registry, rundir
from envsync.gateway.process import RunningGateway
from envsync.gateway.spec import GatewaySpec, ServeOptions, check_token
from envsync.lock.diff import LockDiff
from envsync.lock.model import Lock
from envsync.ops.consent import EditorEvent, LockUpdates
from envsync.ops.editor import EditorControl
from envsync.ops.preflight import Notice, NoticeKind
from envsync.ops.sync import Progress, SyncResult, kernel_start_check
from envsync.settings import Settings


def _ignore(_value: Any) -> None: ...


@contextlib.contextmanager
def _no_view() -> Iterator[Progress | None]:
    yield None


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for."""

    notebook: Path
    serve: ServeOptions = field(default_factory=ServeOptions)
    token: str | None = field(default=None, repr=False)  # None: a fresh random one
    frozen: bool = False
    yes: bool = False
    backend: str | None = None
    lock_updates: LockUpdates = LockUpdates.REFUSE  # a lock sent by the editor: ask, accept, refuse


@dataclass(frozen=True)
class LaunchHooks:
    """Where `launch` reports progress; every hook is optional."""

    relock_progress: Callable[[str], None] | None = None  # uv's lines while re-locking
    # Entered around the sync; yields the callback that receives its ProgressEvents.
    syncing: Callable[[], contextlib.AbstractContextManager[Progress | None]] = _no_view
    notice: Callable[[Notice], None] = _ignore  # each as it is found, in order
    starting: Callable[[str], None] = _ignore  # the kernel name, just before the gateway starts


@dataclass(frozen=True)
class Serving:
    """A serving gateway: where it listens, with what token, and for which notebook and kernel."""

    url: str
    token: str = field(repr=False)
    kernel: str
    fingerprint: str
    pid: int
    notebook: Path  # absolute
    project: str

    @property
    def connection(self) -> str:
        """What a web editor pastes: the URL with the token in the fragment, never in a query."""
        return f"{self.url}/#token={self.token}"

    def served(self) -> dict[str, Any]:
        """The keys every ready line of `launch --json` starts with."""
        return {
            "url": self.url, "token": self.token, "kernel": self.kernel, "fingerprint": self.fingerprint,
            "pid": self.pid, "notebook": str(self.notebook), "project": self.project,
        }  # fmt: skip


@dataclass(frozen=True)
class LaunchInfo(Serving):
    """A serving gateway and what it serves."""

    env: Path
    python: str
    lock: Lock = field(repr=False)  # the lock being served
    notices: tuple[Notice, ...]
    sync: SyncResult = field(repr=False)
    gateway: RunningGateway = field(repr=False)
    editor: EditorControl = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The ready line `launch --json` prints."""
        return {**self.served(), "env": str(self.env), "python": self.python, "connection": self.connection}


def check(request: LaunchRequest) -> None:
    """Refuse insecure or unusable settings (and a busy port) before any slow work."""
    request.serve.validate()
    if request.token is not None:
        check_token(request.token)
    if request.serve.port:
        process.check_port(request.serve.ip, request.serve.port)


@contextlib.contextmanager
def launch(
    request: LaunchRequest, *, settings: Settings, hooks: LaunchHooks | None = None
) -> Iterator[LaunchInfo]:
    """Preflight, sync (holding the env), start the gateway and record it; undo all on exit."""
    from envsync.env import history
    from envsync.ops import preflight
    from envsync.ops.sync import sync

    hooks = hooks or LaunchHooks()
    check(request)
    notebook = Path(os.path.abspath(request.notebook))
    proj = preflight.load_for_launch(request.notebook)
    before = history.last_run(settings, proj.manifest.project)
    pre = preflight.check(
        proj,
        settings=settings,
        frozen=request.frozen,
        yes=request.yes,
        last_run=before,
        progress=hooks.relock_progress,
    )
    notices = list(pre.notices)
    for notice in pre.notices:
        hooks.notice(notice)
    project = pre.project.manifest.project
    with contextlib.ExitStack() as stack:
        with hooks.syncing() as progress:
            result = sync(
                lock=pre.lock,
                project=project,
                notebook=request.notebook,
                settings=settings,
                backend=request.backend,
                repair=True,
                hold=True,
                progress=progress,
            )
            if result.hold is not None:
                stack.enter_context(result.hold)
        for notice in after_sync(pre.lock, result):
            notices.append(notice)
            hooks.notice(notice)
        editor = EditorControl.serving(
            settings=settings,
            notebook=notebook,
            project=project,
            kernel_name=result.kernel_name,
            lock=pre.lock,
            env=result.env,
            checked=result.drift,
            policy=request.lock_updates,
            backend=request.backend,
        )
        stack.callback(editor.close)
        # Forked before the control server's thread, so that the kernel-start check may fork.
        checker = stack.enter_context(contextlib.closing(procfork.Helper.start()))
        editor.kernel_check = functools.partial(checker.run, kernel_start_check)
        server = control.ControlServer(editor.handle)
        stack.callback(server.close)
        spec = GatewaySpec(
            kernel_name=result.kernel_name,
            jupyter_data_dir=settings.jupyter_data_dir,
            serve=request.serve,
            working_dir=notebook.parent,
            # The gateway re-reads the kernelspec at each kernel start: it must still be this.
            python=str(result.python),
            fingerprint=pre.lock.fingerprint,
            control=server.path,
        )
        hooks.starting(result.kernel_name)
        adopt_orphans(stack)
        gw = process.start(spec, token=request.token)
        stack.callback(process.stop, gw)
        registry.record(settings, gw, notebook=notebook, project=project, fingerprint=pre.lock.fingerprint)
        stack.callback(registry.forget, settings, gw.port)
        editor.on_switch = functools.partial(registry.serving, settings, gw.port)
        yield LaunchInfo(
            url=gw.url,
            token=gw.token,
            kernel=result.kernel_name,
            fingerprint=pre.lock.fingerprint,
            pid=gw.pid,
            notebook=notebook,
            project=project,
            env=result.env,
            python=result.python_version,
            lock=pre.lock,
            notices=tuple(notices),
            sync=result,
            gateway=gw,
            editor=editor,
        )


def adopt_orphans(stack: contextlib.ExitStack) -> None:
    """Until `stack` closes, adopt what the gateway's kernels leave behind; then end all of it.

    A process a kernel starts (a server, a double-forked daemon) outlives its kernel and a
    gateway killed with SIGKILL. As a child subreaper this process adopts each such orphan
    instead of init, so on the way out every child of ours that was not one before the
    gateway started is ended by PID, with all below it.
    """
    previous = procinfo.child_subreaper(True)
    if previous is None:
        return
    known = set(proc.child_pids(os.getpid()))
    if not previous:
        stack.callback(procinfo.child_subreaper, False)
    stack.callback(_end_orphans, known)


def _end_orphans(known: set[int]) -> None:
    stray = [pid for pid in proc.child_pids(os.getpid()) if pid not in known]
    below = [pid for parent in stray for pid in proc.descendants(parent)]
    rundir.sweep([*below, *stray])
    for pid in stray:  # adopted children are ours to reap
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def after_sync(lock: Lock, result: SyncResult) -> list[Notice]:
    """What the sync found that the user must hear: a repaired drift, another Python."""
    from envsync.lock.targets import pythons_in_range

    found: list[Notice] = []
    if result.repaired:
        found.append(
            Notice(
                NoticeKind.DRIFT_REPAIRED,
                "the environment had drifted from the lock (" + "; ".join(result.repaired) + "): repaired",
                details=result.repaired,
            )
        )
    locked_for = pythons_in_range(lock.requires_python)[0]
    running_minor = ".".join(result.python_version.split(".")[:2])
    if running_minor != locked_for:
        found.append(
            Notice(
                NoticeKind.PYTHON_VERSION,
                f"the lock was resolved for Python {locked_for}; this environment runs Python {result.python_version}",
            )
        )
    return found


# --- while it serves ---------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayStopped:
    """The gateway exited cleanly without us asking: `envsync stop`, or a SIGTERM to it."""

    returncode: int


@dataclass(frozen=True)
class LockChanged:
    """The notebook on disk now holds another lock (or a stale one) than the one served."""

    diff: LockDiff
    stale: bool


@dataclass(frozen=True)
class NotebookUnreadable:
    """The notebook changed on disk and cannot be read now (a sync client mid-write, say)."""

    message: str


Event = GatewayStopped | LockChanged | NotebookUnreadable | EditorEvent


class Watch:
    """Looks at the gateway and the notebook each time `poll` is called."""

    def __init__(self, info: LaunchInfo, notebook: Path | None = None) -> None:
        self.info = info
        self.notebook = notebook or info.notebook
        # No baseline: the first poll compares the notebook with the lock being served, so
        # a collaborator's lock that arrived during the build is reported too.
        self._seen: tuple[int, int] | None = None

    def poll(self) -> list[Event]:
        """What happened since the last call; GatewayError if the gateway died."""
        gw = self.info.gateway
        if gw.process is not None:
            returncode = gw.process.poll()
            if returncode == 0:
                return [GatewayStopped(returncode)]
            if returncode is not None:
                raise GatewayError(
                    f"Kernel Gateway exited unexpectedly (exit {returncode})",
                    detail=process.log_tail(gw.log_path) if gw.log_path else None,
                )
        events: list[Event] = [*self.info.editor.events()]
        now = _stat(self.notebook)
        if self._seen is not None and now == self._seen:
            return events
        self._seen = now
        event = self._compare()
        return events if event is None else [*events, event]

    def _compare(self) -> Event | None:
        from envsync.lock.diff import diff
        from envsync.ops import project

        try:
            new = project.load(self.notebook).manifest
        except EnvsyncError as exc:
            return NotebookUnreadable(exc.message)
        if new.lock is not None and not new.lock_is_stale and self.info.editor.expects(new.lock.fingerprint):
            return None  # the lock being served, or the editor's that this launch is writing
        d = diff(self.info.editor.served_lock, new.lock)
        if d.empty and not new.lock_is_stale:
            return None
        return LockChanged(d, new.lock_is_stale)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
