"""The launch side of the editor API: what it serves, and a lock that comes from the editor.

The gateway child answers `/api/envsync*` by asking `EditorControl.handle` over the control
socket (`envsync.gateway.control`); everything with a side effect happens here, in the
process that owns the notebook, the env store and the terminal:

- `state`: the served lock, env and build state, and the env's last file check;
- `diff`: the editor's lock against the served one, nothing changed;
- `lock`: the editor's manifest, validated exactly like one read from a file, for the
  same project, with a current lock and allowed indexes; then the user's consent
  (`LockUpdates`): `ask` hands a `ConsentRequest` to whoever polls `events()` (the CLI
  asks at the terminal) and waits up to `CONSENT_TIMEOUT`. Accepted, a thread builds the
  env (`envsync.env.sync.prepare`), holds it until the launch ends, writes the manifest
  into the notebook (every other byte kept), and only then points the served kernelspec at
  the new env, so a failure anywhere leaves the old env served and the notebook as it was;
- `kernel-start`: the fast file check of the served env before each kernel start or
  restart, and the python and fingerprint the kernelspec must then name.

Nothing here prints; the CLI renders `events()`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envsync.env import drift, history, store
from envsync.env.sync import ProgressEvent, allowed_indexes, prepare
from envsync.errors import EnvsyncError
from envsync.fsutil import atomic_write_text
from envsync.jupyter import kernelspecs
from envsync.lock.diff import LockDiff, diff
from envsync.lock.model import Lock, packages_for
from envsync.notebook.file import read_notebook, write_manifest
from envsync.notebook.manifest import Manifest, parse_manifest
from envsync.ops.consent import (
    CONSENT_TIMEOUT,
    ConsentRequest,
    EditorEvent,
    EnvState,
    LockUpdateAsked,
    LockUpdateFailed,
    LockUpdateReady,
    LockUpdates,
    LockUpdateStarted,
)
from envsync.settings import Settings

BUILD_JOIN_TIMEOUT = 30.0  # how long the end of a launch waits for a build under way

Answer = tuple[int, dict[str, Any]]


class Refused(Exception):
    """A request answered with an HTTP error status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def verification(report: drift.DriftReport, when: float | None = None) -> dict[str, Any]:
    """A file check as the editor API shows it; a package-level difference has no path."""
    found: list[dict[str, Any]] = []
    for d in report.differences:
        if d.kind == drift.DriftKind.MODIFIED:
            found += [{"distribution": d.name, "path": f.path, "problem": str(f.problem)} for f in d.files]
        else:
            found.append({"distribution": d.name, "path": None, "problem": str(d.kind)})
    stamp = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    return {
        "when": stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "mode": "deep" if report.deep else "fast",
        "clean": report.clean,
        "files": found,
    }


def _one_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "failed"


@dataclass
class _Served:
    lock: Lock
    record: store.EnvRecord


@dataclass
class EditorControl:
    """The state behind the editor API for one launch; `handle` is the control socket's handler."""

    settings: Settings
    notebook: Path
    project: str
    kernel_name: str
    served: _Served
    checked: drift.DriftReport
    policy: LockUpdates = LockUpdates.REFUSE
    backend: str | None = None
    consent_timeout: float = CONSENT_TIMEOUT
    on_switch: Callable[[str], None] | None = None  # told each new fingerprint once it is served
    state: EnvState = EnvState.READY
    progress: dict[str, Any] | None = None
    error: str | None = None
    pending: str | None = None  # the fingerprint being built
    _verified_at: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _events: list[EditorEvent] = field(default_factory=list)
    _holds: list[store.EnvHold] = field(default_factory=list)
    _consents: list[ConsentRequest] = field(default_factory=list)
    _builder: threading.Thread | None = None
    _closed: bool = False
    # The check before each kernel start (a launch runs it in a helper process, see there).
    kernel_check: Callable[[store.EnvRecord, Lock], drift.DriftReport] = drift.check

    @classmethod
    def serving(
        cls,
        *,
        settings: Settings,
        notebook: Path,
        project: str,
        kernel_name: str,
        lock: Lock,
        env: Path,
        checked: drift.DriftReport,
        policy: LockUpdates,
        backend: str | None,
    ) -> EditorControl:
        """The control for a launch that serves `lock` from the env at `env`."""
        record = store.read_ready(env)
        if record is None:
            raise EnvsyncError(f"environment {env.name} is gone or incomplete", hint="run `envsync launch` again")
        return cls(settings, notebook, project, kernel_name, _Served(lock, record), checked, policy, backend)

    @property
    def served_lock(self) -> Lock:
        with self._lock:
            return self.served.lock

    def expects(self, fingerprint: str) -> bool:
        """True for the served lock and one being built: the notebook may hold either without news."""
        with self._lock:
            return fingerprint in (self.served.lock.fingerprint, self.pending)

    def events(self) -> list[EditorEvent]:
        """What happened since the last call, oldest first."""
        with self._lock:
            out, self._events = self._events, []
        return out

    def handle(self, request: dict[str, Any]) -> Answer:
        """Answer one control request; never raises."""
        op = request.get("op")
        try:
            if op == "state":
                return 200, self.state_body()
            if op in ("diff", "lock", "kernel-start"):
                return {"diff": self._diff, "lock": self._update, "kernel-start": self._kernel_start}[op](request)
            return 400, {"message": f"unknown control request {str(op)[:40]!r}"}
        except Refused as exc:
            return exc.status, {"message": exc.message}
        except EnvsyncError as exc:
            return 400, {"message": _one_line(exc.message)}
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the control server
            return 500, {"message": f"{type(exc).__name__}: {_one_line(str(exc))}"}

    def state_body(self) -> dict[str, Any]:
        """GET /api/envsync without the kernels (the gateway adds them)."""
        with self._lock:
            lock, rec = self.served.lock, self.served.record
            return {
                "project": self.project,
                "fingerprint": lock.fingerprint,
                "python": rec.python_version,
                "packages": [
                    {"name": p.name, "version": p.version}
                    for p in sorted(packages_for(lock, rec.marker_env), key=lambda p: p.key)
                ],
                "state": str(self.state),
                "progress": self.progress,
                "error": self.error,
                "verification": verification(self.checked, self._verified_at),
                "lock-updates": str(self.policy),
            }

    # --- requests -----------------------------------------------------------------------

    def _their_manifest(self, request: dict[str, Any]) -> Manifest:
        data = request.get("manifest")
        if not isinstance(data, dict):
            raise Refused(400, "manifest must be the notebook's metadata.envsync object")
        return parse_manifest(json.loads(json.dumps(data)))

    def _diff(self, request: dict[str, Any]) -> Answer:
        theirs = self._their_manifest(request)
        d = diff(self.served_lock, theirs.lock)
        return 200, {"diff": d.to_dict(), "same": d.empty}

    def _checked_update(self, request: dict[str, Any]) -> tuple[Manifest, Lock]:
        """The editor's manifest and lock, refused as a file's would be (400) or when foreign (409)."""
        theirs = self._their_manifest(request)
        if theirs.project != self.project:
            raise Refused(409, f"this gateway serves project {self.project!r}, not {theirs.project!r}")
        if theirs.lock is None:
            raise Refused(400, "the manifest has no lock: lock it first (`envsync lock`)")
        self.settings.require_index_allowed(theirs.index)
        allowed_indexes(theirs.lock, self.settings)
        if theirs.lock_is_stale:
            raise Refused(400, "the manifest's lock is stale: its dependencies, Python range, targets or index changed")
        return theirs, theirs.lock

    def _update(self, request: dict[str, Any]) -> Answer:
        manifest, lock = self._checked_update(request)
        with self._lock:
            if self._closed:
                raise Refused(503, "the launch is stopping")
            if self.pending is not None:
                raise Refused(409, "another lock update is under way; try again when it is done")
            if self.policy == LockUpdates.REFUSE:
                raise Refused(403, "this launch takes no lock updates from the editor (envsync launch --lock-updates refuse)")
            self.pending = lock.fingerprint
            d = diff(self.served.lock, lock)
        try:
            self._consent(d)
        except BaseException:
            with self._lock:
                self.pending = None
            raise
        with self._lock:
            self.state, self.progress, self.error = EnvState.BUILDING, None, None
            self._events.append(LockUpdateStarted(lock.fingerprint, d))
            self._builder = threading.Thread(
                target=self._build, args=(manifest, lock), name="envsync-lock-update", daemon=True
            )
            self._builder.start()
        return 202, {"state": str(EnvState.BUILDING), "fingerprint": lock.fingerprint}

    def _consent(self, d: LockDiff) -> None:
        if self.policy == LockUpdates.ACCEPT:
            if d.hash_changes:  # as at launch (--yes): a person must look at this one
                names = ", ".join(c.name for c in d.hash_changes)
                message = f"{names}: same version, other file hashes (a tampered lock?); only `ask` takes it"
                raise Refused(403, message)
            return
        ask = ConsentRequest(self.project, d, timeout=self.consent_timeout)
        with self._lock:
            self._consents.append(ask)
            self._events.append(LockUpdateAsked(ask))
        answer = ask.wait()
        ask.answer(False)  # a late answer at the terminal changes nothing now
        with self._lock:
            self._consents.remove(ask)
        if answer is None:
            raise Refused(
                403, f"nobody accepted the lock update at the launch terminal within {self.consent_timeout:.0f} s"
            )
        if not answer:
            raise Refused(403, "the lock update was declined at the launch terminal")

    def _kernel_start(self, _request: dict[str, Any]) -> Answer:
        with self._lock:
            lock, rec = self.served.lock, self.served.record
        report = self.kernel_check(rec, lock)
        with self._lock:
            if self.served.lock.fingerprint == lock.fingerprint:
                self.checked, self._verified_at = report, time.time()
        if not report.clean:
            names = ", ".join(d.name for d in report.differences[:3])
            return 409, {
                "message": f"the environment's files differ from the lock ({names}): no kernel starts on it; "
                "stop and run `envsync launch` again to repair it"
            }
        return 200, {"python": str(rec.python), "fingerprint": lock.fingerprint}

    # --- the build thread ---------------------------------------------------------------

    def _on_progress(self, event: ProgressEvent) -> None:
        with self._lock:
            self.progress = {"message": event.message, "done": event.done, "total": event.total}

    def _build(self, manifest: Manifest, lock: Lock) -> None:
        try:
            with prepare(
                lock=lock, settings=self.settings, backend=self.backend, repair=True, progress=self._on_progress
            ) as ready:
                hold = store.EnvHold(self.settings, ready.record.path)
            try:
                self._write_notebook(manifest)
                self._switch(ready.record, lock, ready.drift)
            except BaseException:
                hold.release()
                raise
            history.record_run(self.settings, project=self.project, lock=lock, notebook=str(self.notebook))
            if self.on_switch is not None:
                self.on_switch(lock.fingerprint)
        except Exception as exc:  # noqa: BLE001 - any failure is the build's state, shown to the editor
            message = exc.message if isinstance(exc, EnvsyncError) else f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.state, self.error, self.pending = EnvState.FAILED, _one_line(message), None
                self._events.append(LockUpdateFailed(_one_line(message)))
            return
        with self._lock:
            self._holds.append(hold)
            self.state, self.progress, self.pending = EnvState.READY, None, None
            self._events.append(LockUpdateReady(lock.fingerprint))

    def _write_notebook(self, manifest: Manifest) -> None:
        data = manifest.to_dict()
        parse_manifest(data)  # what is written reads back, as for every other writer
        write_manifest(read_notebook(self.notebook), data)

    def _switch(self, record: store.EnvRecord, lock: Lock, checked: drift.DriftReport) -> None:
        """Point the served kernel name at the new env; kernels started from now on run it."""
        spec = kernelspecs.kernelspec(
            python=record.python,
            requires_python=lock.requires_python,
            project=self.project,
            fingerprint=lock.fingerprint,
            notebook=str(self.notebook),
        )
        with kernelspecs.project_lock(self.settings, self.project):
            # The name this gateway serves (it forces it), even when `choose_name` would now
            # pick another because this launch still holds the old env.
            target = self.settings.kernels_dir / self.kernel_name / "kernel.json"
            atomic_write_text(target, json.dumps(spec, indent=1) + "\n")
            with self._lock:
                self.served = _Served(lock, record)
                self.checked, self._verified_at = checked, time.time()

    def close(self) -> None:
        """Refuse what is waiting for consent, wait (bounded) for a build, release the holds."""
        with self._lock:
            self._closed = True
            consents, builder = list(self._consents), self._builder
        for ask in consents:
            ask.answer(False)
        if builder is not None:
            builder.join(BUILD_JOIN_TIMEOUT)
        with self._lock:
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()
