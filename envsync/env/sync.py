"""Lock -> a verified env: build it once, reuse it after a fast check, repair it.

`prepare` is the env half of `envsync.ops.sync.sync`, which then registers the kernel.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from envsync.env import drift, files, installers, interpreters, store
from envsync.env.install import Phase as Phase
from envsync.env.install import Progress as Progress
from envsync.env.install import ProgressEvent as ProgressEvent
from envsync.env.install import install, memo_meanwhile, quiet, uninstall, verified_files
from envsync.env.interpreters import Interpreter
from envsync.errors import InstallError, ToolError
from envsync.fsutil import atomic_write_text
from envsync.lock.model import Lock, packages_for, verify
from envsync.settings import DEFAULT_INDEX, Settings, normalize_index

REQUIREMENTS = "envsync-requirements.txt"


@dataclass(frozen=True)
class ReadyEnv:
    """A complete env of the lock on this machine, as `prepare` leaves it."""

    record: store.EnvRecord
    reused: bool  # an env that was already there (perhaps repaired), not a new build
    installer_ran: bool
    repaired: tuple[str, ...]  # the packages a repair reinstalled or removed
    drift: drift.DriftReport  # not clean when drift was found and not repaired


@contextlib.contextmanager
def prepare(
    *,
    lock: Lock,
    settings: Settings,
    backend: str | None = None,
    python: str | None = None,
    repair: bool = False,
    progress: Progress | None = None,
) -> Iterator[ReadyEnv]:
    """Reuse, repair or build the env of `lock`; yield it while its key's lock is held.

    Reuses a complete env of the same lock without running the installer (its drift is
    checked in-process); builds one otherwise. `python` asks for a particular interpreter
    ("3.12" or a path); `repair` fixes a drifted env in place. `backend` applies to builds:
    an env built by either backend is reused as it is, since both install the same
    distributions. Inside the block `gc` cannot remove the env, so a caller can register
    and hold it there.
    """
    # The fingerprint names the env on disk: it must be the hash of these very packages.
    verify(lock)
    indexes = allowed_indexes(lock, settings)
    report = progress or quiet
    for _attempt in range(3):
        interp: Interpreter | None = None
        candidates = [] if python else _in_range(store.ready_envs(settings, lock.fingerprint), lock)
        if candidates:
            key = candidates[0].key
        else:
            report(
                ProgressEvent(
                    Phase.INTERPRETER, f"choosing a Python for requires-python {lock.requires_python!r}"
                )
            )
            interp = interpreters.find(
                lock.requires_python, request=python, cache=interpreters.cache_file(settings)
            )
            key = store.env_key(lock.fingerprint, interp.tag)

        def waiting(key: str = key) -> None:
            report(ProgressEvent(Phase.WAIT, f"waiting for another envsync working on environment {key}"))

        with store.locked(settings, key, on_wait=waiting):
            ready = store.ready_envs(settings, lock.fingerprint, key=key)
            if not ready and interp is None:
                continue  # the env we meant to reuse went away (gc); choose again
            if ready:
                env = _reuse(ready[0], lock, settings, indexes, repair, report)
            else:
                env = _fresh(settings, lock, key, interp, backend, indexes, report)
            store.mark_used(env.record.path)
            yield env
            return
    raise InstallError("the environment kept disappearing while envsync tried to use it", hint="run again")


def _reuse(
    rec: store.EnvRecord, lock: Lock, settings: Settings, indexes: list[str], repair: bool, report: Progress
) -> ReadyEnv:
    report(ProgressEvent(Phase.REUSE, f"reusing environment {rec.path.name}"))
    if not files.has_record(rec.path):
        _record_files(rec, lock, report)
    state = drift.check(rec, lock)
    if (rec.locked is None or rec.requires_python is None) and state.clean:
        # A record from before these were kept; its Python is in this lock's range (above).
        rec = replace(rec, locked=drift.expected(lock, rec.marker_env), requires_python=lock.requires_python)
        store.write_ready(rec)
    ran = repair and not state.clean
    repaired: tuple[str, ...] = ()
    if ran:
        rec, state, repaired = _repair(rec, lock, settings, indexes, state, report)
    return ReadyEnv(rec, reused=True, installer_ran=ran, repaired=repaired, drift=state)


def _fresh(
    settings: Settings,
    lock: Lock,
    key: str,
    interp: Interpreter | None,
    backend: str | None,
    indexes: list[str],
    report: Progress,
) -> ReadyEnv:
    assert interp is not None  # chosen above whenever no ready env was found
    rec, state = _build(settings, lock, key, interp, backend, indexes, report)
    return ReadyEnv(rec, reused=False, installer_ran=True, repaired=(), drift=state)


def _record_files(rec: store.EnvRecord, lock: Lock, report: Progress) -> None:
    """Give an env built before file records existed its record, when its files match RECORD."""
    report(ProgressEvent(Phase.VERIFY, "recording the files of the environment (once)"))
    entries, problems = files.verify(
        rec.path, drift.dist_infos(rec.path, drift.locked_in(rec, lock))
    )
    if not problems:
        files.write(rec.path, entries)


def allowed_indexes(lock: Lock, settings: Settings) -> list[str]:
    """The lock's package indexes, most used first; each must be allowed on this machine."""
    counts = Counter(normalize_index(p.index or DEFAULT_INDEX) for p in lock.packages)
    for url in counts:
        settings.require_index_allowed(url)
    return [url for url, _n in counts.most_common()] or [DEFAULT_INDEX]


def _build(
    settings: Settings,
    lock: Lock,
    key: str,
    interp: Interpreter,
    backend_name: str | None,
    indexes: list[str],
    report: Progress,
) -> tuple[store.EnvRecord, drift.DriftReport]:
    """A new env of `lock`, and its drift: none, since every file was just hashed against RECORD."""
    from envsync.formats.hashed import hashed_requirements  # a build's own: reuse runs without it

    store.clear_key(settings, key)
    be = installers.choose(backend_name or settings.backend)
    path = store.new_env_path(settings, key)
    pkgs = packages_for(lock, interp.marker_env)
    try:
        report(
            ProgressEvent(
                Phase.VENV, f"creating a virtual environment with Python {interp.version} ({be.name})"
            )
        )
        try:
            be.create(path, interp.path)
        except ToolError as exc:
            raise InstallError(
                f"cannot create a virtual environment: {exc.message}", detail=exc.stderr
            ) from exc
        seed = drift.installed(path)
        requirements = path / REQUIREMENTS
        atomic_write_text(requirements, hashed_requirements(pkgs))
        report(ProgressEvent(Phase.INSTALL, f"installing {len(pkgs)} packages with {be.name}", 0, len(pkgs)))
        memo = memo_meanwhile(be, settings)
        install(be, path, requirements, indexes, settings, len(pkgs), report)
        report(ProgressEvent(Phase.VERIFY, "checking what was installed against the lock"))
        have = drift.installed(path)
        want = drift.expected(lock, interp.marker_env)
        diffs, ignored = drift.compare(want, have, seed=seed)
        if diffs:
            raise InstallError(f"the installed environment does not match the lock: {_summary(diffs)}")
        verified = verified_files(be, path, want, requirements, indexes, settings, report, memo())
        files.write(path, verified)
        rec = store.EnvRecord(
            path=path,
            key=key,
            fingerprint=lock.fingerprint,
            python_version=interp.version,
            tag=interp.tag,
            base_python=str(interp.path),
            marker_env=dict(interp.marker_env),
            backend=be.name,
            installed=have,
            seed=seed,
            created=time.time(),
            locked=want,
            requires_python=lock.requires_python,
        )
        store.write_ready(rec)
        state = drift.DriftReport(
            env=path,
            fingerprint=lock.fingerprint,
            python_version=interp.version,
            differences=(),
            ignored=ignored,
            files_checked=files.count(verified),
        )
    except BaseException as exc:
        # Ctrl-C or a failure: no half env stays behind (after kill -9 the next build clears it).
        store.discard(settings, path)
        if isinstance(exc, OSError):
            # A full disk or a permission problem in the store: one line, not a traceback.
            raise InstallError(
                f"cannot build the environment in {settings.envs_dir}: {exc.strerror or exc}",
                hint="free some disk space or check the permissions of that folder",
            ) from exc
        raise
    return rec, state


def _repair(
    rec: store.EnvRecord,
    lock: Lock,
    settings: Settings,
    indexes: list[str],
    found: drift.DriftReport,
    report: Progress,
) -> tuple[store.EnvRecord, drift.DriftReport, tuple[str, ...]]:
    names = tuple(d.name for d in found.differences)
    report(ProgressEvent(Phase.REPAIR, f"repairing {len(names)} packages: {', '.join(names)}"))
    # The env's own installer: a pip-built env keeps pip, a uv-built one has none.
    be = installers.choose(rec.backend)
    # Withdrawn first: if the repair dies midway, the next sync rebuilds instead of trusting it.
    store.unready(rec.path)
    # A distribution with edited or deleted files is removed too and installed again whole.
    gone = (drift.DriftKind.EXTRA, drift.DriftKind.CHANGED, drift.DriftKind.MODIFIED)
    uninstall(be, rec.path, [d.name for d in found.differences if d.kind in gone])
    from envsync.formats.hashed import hashed_requirements

    pkgs = packages_for(lock, rec.marker_env)
    requirements = rec.path / REQUIREMENTS
    atomic_write_text(requirements, hashed_requirements(pkgs))
    install(be, rec.path, requirements, indexes, settings, len(pkgs), report)
    have = drift.installed(rec.path)
    diffs, _ignored = drift.compare(drift.expected(lock, rec.marker_env), have, seed=rec.seed)
    if diffs:
        raise InstallError(f"repair left the environment different from the lock: {_summary(diffs)}")
    want = drift.expected(lock, rec.marker_env)
    files.write(rec.path, verified_files(be, rec.path, want, requirements, indexes, settings, report))
    rec = replace(rec, installed=have, backend=be.name, locked=want)
    store.write_ready(rec)
    return rec, drift.check(rec, lock), names


def _in_range(records: list[store.EnvRecord], lock: Lock) -> list[store.EnvRecord]:
    """Envs of this fingerprint whose Python the lock admits (the same packages can be
    locked for 3.11 and for 3.12; a 3.11 env does not serve the 3.12 lock)."""
    if all(r.requires_python == lock.requires_python for r in records):
        return records  # each interpreter was chosen within this very range
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(lock.requires_python)
    return [r for r in records if r.python_version and spec.contains(r.python_version, prereleases=True)]


def _summary(diffs: Sequence[drift.Difference]) -> str:
    parts = [
        f"{d.name} ({d.kind}: locked {d.locked or '-'}, installed {d.installed or '-'})" for d in diffs[:5]
    ]
    more = f" and {len(diffs) - 5} more" if len(diffs) > 5 else ""
    return ", ".join(parts) + more
