"""Lock -> a verified env with its kernel registered: what `envsync sync` and `launch` call.

The env comes from `envsync.env.sync.prepare`; the kernelspec is written and the env
held while the env's key is still locked, so `gc` cannot remove it in between, and
under the project's kernel lock, so two locks of one project never share a name. The run
is recorded in history at the end, so a caller that wants to say what changed reads
`history.last_run` first.

Bytecode is compiled after a build, in a process of its own that the sync does not wait
for (`compile_in_background`): installing with uv's `--compile-bytecode` made the build
wait for every module of every package, while the first kernel of an env without any
`.pyc` took about twice as long to answer as one in a pip-made venv. The kernel's own
imports are compiled first, then the rest only when a CPU is idle. When a gateway is about
to serve the env (`hold`, as `launch` asks), the kernel's imports are compiled before
the sync returns (about a second on a new env), so its first kernel does not race them.
Even at idle priority the compile slowed each kernel start by about 0.15 s while it ran (two
cores), so a kernel start pauses it for a few seconds (`kernel_start_check`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsync import proc
from envsync.env import drift, history, store
from envsync.env.installers import env_python
from envsync.env.sync import Phase as Phase
from envsync.env.sync import Progress as Progress
from envsync.env.sync import ProgressEvent as ProgressEvent
from envsync.env.sync import prepare
from envsync.errors import EnvsyncError
from envsync.jupyter import kernelspecs
from envsync.lock.model import Lock
from envsync.rules import check_project
from envsync.settings import Settings

# The compile gives up after this long (it ends itself: nothing waits for it).
COMPILE_DEADLINE = 900
# A file in the env whose mtime says until when the compile waits between two modules.
COMPILE_PAUSE = "envsync-compile-pause"
KERNEL_START_PAUSE = 5.0  # seconds: a kernel start and its first execute fit in it
KERNEL_PACKAGE = "ipykernel"

# Run by the env's own interpreter in isolated mode, so PYTHONDONTWRITEBYTECODE and the
# like do not apply, and only when a CPU is idle (SCHED_IDLE on Linux, else the lowest
# priority), so a kernel started meanwhile does not wait for it: importing what a kernel
# start imports writes exactly those `.pyc` files first; compileall then covers the rest.
_COMPILE = """\
import compileall, importlib, os, signal, sys, sysconfig, time
signal.alarm(int(sys.argv[1]))
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    os.nice(19)
def paused():
    try:
        return os.stat(sys.argv[2]).st_mtime > time.time()
    except OSError:
        return False
for name in sys.argv[3:]:
    while paused():
        time.sleep(0.1)
    try:
        importlib.import_module(name)
    except Exception:
        pass
for folder in sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}):
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            while paused():
                time.sleep(0.1)
            compileall.compile_file(os.path.join(root, name), quiet=2)
"""

# What a kernel start imports (its app, the IPython kernel and shell, the debugger), compiled
# by importing it in isolated mode, where bytecode is written whatever the environment says.
KERNEL_MODULES = (
    "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
    "ipykernel.comm", "ipykernel.eventloops", "debugpy.server.api", "IPython.core.completerlib",
    "IPython.core.debugger", "IPython.core.logger", "IPython.extensions.storemagic", "psutil",
    "tornado.platform.asyncio",
)
_KERNEL_IMPORTS = """\
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""
KERNEL_IMPORTS_DEADLINE = 120.0

# Kept so the finished processes are reaped and no Popen is collected while running.
_compiling: list[proc.Popen[bytes]] = []


@dataclass(frozen=True)
class SyncResult:
    env: Path
    key: str
    python: Path
    python_version: str
    kernel_name: str
    reused: bool
    installer_ran: bool
    repaired: tuple[str, ...]
    drift: drift.DriftReport  # the env after the sync: not clean when drift was found and not repaired
    backend: str
    packages: int
    seconds: float
    hold: store.EnvHold | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": str(self.env),
            "key": self.key,
            "python": str(self.python),
            "python-version": self.python_version,
            "kernel": self.kernel_name,
            "reused": self.reused,
            "installer-ran": self.installer_ran,
            "repaired": list(self.repaired),
            "drift": self.drift.to_dict(),
            "backend": self.backend,
            "packages": self.packages,
            "seconds": round(self.seconds, 3),
        }


def sync(
    *,
    lock: Lock,
    project: str,
    notebook: Path,
    settings: Settings,
    backend: str | None = None,
    python: str | None = None,
    register_user: bool = False,
    repair: bool = False,
    hold: bool = False,
    progress: Progress | None = None,
) -> SyncResult:
    """Make sure an env matching `lock` exists on this machine and register its kernel.

    Reuses a complete env of the same lock without running the installer (its drift
    is checked in-process); builds one otherwise. `python` asks for a particular
    interpreter ("3.12" or a path); `repair` fixes a drifted env in place; `hold`
    returns the env already held (`store.hold`) for a gateway about to use it.
    `backend` applies to builds: an env built by either backend is reused as it is,
    since both install the same distributions.
    """
    start = time.perf_counter()
    check_project(project)
    notebook_path = str(Path(notebook).absolute())
    with prepare(
        lock=lock, settings=settings, backend=backend, python=python, repair=repair, progress=progress
    ) as ready:
        rec = ready.record
        if progress is not None:
            progress(ProgressEvent(Phase.KERNEL, f"registering kernel for {project}"))
        # Name choice, kernelspec and hold as one step: a second sync of the project sees
        # this env held before it chooses its own name.
        with kernelspecs.project_lock(settings, project):
            name = kernelspecs.write(
                settings,
                project=project,
                notebook=notebook_path,
                fingerprint=lock.fingerprint,
                python=rec.python,
                requires_python=lock.requires_python,
                env_key=rec.key,
                held=functools.partial(store.in_use, settings),
                register_user=register_user,
            )
            held = store.EnvHold(settings, rec.path) if hold else None
    try:
        history.record_run(settings, project=project, lock=lock, notebook=notebook_path)
    except BaseException:
        if held is not None:
            held.release()
        raise
    packages = drift.locked_in(rec, lock)
    if ready.installer_ran and KERNEL_PACKAGE in packages:
        if held is not None:
            compile_kernel_imports(rec.path)
        compile_in_background(rec.path, first=() if held is not None else KERNEL_MODULES)
    return SyncResult(
        env=rec.path,
        key=rec.key,
        python=rec.python,
        python_version=rec.python_version,
        kernel_name=name,
        reused=ready.reused,
        installer_ran=ready.installer_ran,
        repaired=ready.repaired,
        drift=ready.drift,
        backend=rec.backend,
        packages=len(packages),
        seconds=time.perf_counter() - start,
        hold=held,
    )


def compile_in_background(env: Path, first: tuple[str, ...] = KERNEL_MODULES) -> None:
    """Start compiling the env's modules to bytecode, without waiting; a failure costs only speed.

    The modules `first` are imported first (which writes their bytecode), then every
    module is compiled; a launch, which compiled the kernel's imports already, gives none.
    """
    _compiling[:] = [p for p in _compiling if p.poll() is None]
    try:
        started = proc.spawn(
            [env_python(env), "-I", "-c", _COMPILE, str(COMPILE_DEADLINE), str(env / COMPILE_PAUSE), *first],
            env=proc.clean_env(),
            stdout=proc.DEVNULL,
            stderr=proc.DEVNULL,
        )
    except EnvsyncError:
        return
    _compiling.append(started)


def kernel_start_check(rec: store.EnvRecord, lock: Lock) -> drift.DriftReport:
    """The file check before a kernel starts in `rec`; its background compile waits meanwhile.

    The compile waits until `KERNEL_START_PAUSE` seconds from now, so that the kernel's
    start and first execute do not share the cores with it; it goes on by itself after.
    """
    pause = rec.path / COMPILE_PAUSE
    with contextlib.suppress(OSError):
        pause.touch()
        until = time.time() + KERNEL_START_PAUSE
        os.utime(pause, (until, until))
    return drift.check(rec, lock)


def compile_kernel_imports(env: Path) -> None:
    """Write the `.pyc` files of what a kernel start imports, waiting for it; a failure costs only speed."""
    try:
        proc.run(
            [env_python(env), "-I", "-c", _KERNEL_IMPORTS, *KERNEL_MODULES],
            env=proc.clean_env(),
            timeout=KERNEL_IMPORTS_DEADLINE,
            check=False,
        )
    except EnvsyncError:
        return
