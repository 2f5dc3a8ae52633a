"""Short commands as whole processes on the built reference env, against `envsync --help` and pip.

`envsync sync NB` here reuses the env (no installer runs) and `envsync check NB` is the
fast file check; pip's `freeze` and `check` are this venv's pip run with `--python ENV`
(uv-made envs have no pip). The in-process figures are what the whole processes spend
beyond start-up: the fast check (names, versions, each file's size and mtime) and the
deep check (every file rehashed against RECORD).
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks.common import BIN, Series, log, run_timed, stats, timed
from benchmarks.context import Context
from envsync.env import drift, files, store

HOW_CHOSEN = (
    "How the fast check was chosen (measured on 2026-12-01 with the same env, 11,847 files, medians of 7, "
    "this machine under load): one `os.stat` of each recorded path 46-54 ms; `os.lstat` 54-57 ms; "
    "`os.stat(name, dir_fd=...)` with one open folder at a time 64-67 ms; `os.scandir` of each of the 1,379 "
    "folders and `DirEntry.stat()` 105-142 ms (Linux's `scandir` gives no sizes or times); two or four "
    "threads 65-71 ms (the loop is bound by the interpreter, not the disk). The record is stored by column "
    "(paths and hashes as one string a distribution): reading it went from 28 ms to 11 ms."
)

# The modules `envsync check` loads beyond `--help`, for a manifest read before (not the
# schema's and packaging's checks, which a manifest's first reading adds).
CHECK_IMPORTS = "import envsync.cli, envsync.cli.commands.env, envsync.env.drift, envsync.ops.project, envsync.notebook.accepted"


def run(ctx: Context) -> dict[str, Any]:
    env = ctx.ref_env()
    nb = ctx.ref.notebook
    child = ctx.env()
    python = env / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python)]
    variants = {
        "python_floor": lambda: run_timed([sys.executable, "-c", "pass"], env=child),
        "envsync_help": lambda: run_timed([BIN / "envsync", "--help"], env=child),
        "check_imports": lambda: run_timed([sys.executable, "-c", CHECK_IMPORTS], env=child),
        "envsync_sync_reuse": lambda: run_timed([BIN / "envsync", "sync", nb], env=child),
        "envsync_check": lambda: run_timed([BIN / "envsync", "check", nb], env=child),
        "pip_freeze": lambda: run_timed([*pip, "freeze"], env=child),
        "pip_check": lambda: run_timed([*pip, "check"], env=child),
    }
    log("commands: whole processes on the built env")
    series = Series()
    series.alternate(variants, 3 if ctx.quick else ctx.reps * 2, warmup=not ctx.quick)
    rec = store.ready_envs(ctx.settings, ctx.ref.lock.fingerprint)[0]
    fast = [timed(lambda: drift.check(rec, ctx.ref.lock)) for _ in range(max(ctx.reps, 3))]
    deep = [timed(lambda: drift.check(rec, ctx.ref.lock, deep=True)) for _ in range(max(ctx.reps // 2, 1))]
    record = files.load_columns(env) or {}
    loads = [timed(lambda: files.load_columns(env)) for _ in range(3)]
    stat_only = [timed(lambda: files.fast_check(env, record)) for _ in range(3)]
    labels = {
        "python_floor": "`python -c pass` (the interpreter's floor)",
        "envsync_help": "`envsync --help`",
        "check_imports": "`python -c 'import ...'` of what `envsync check` imports, and nothing else",
        "envsync_sync_reuse": "`envsync sync NB`, env built (reuse)",
        "envsync_check": "`envsync check NB` (fast file check)",
        "pip_freeze": "`pip --python ENV freeze` (names and versions only)",
        "pip_check": "`pip --python ENV check` (dependency metadata only)",
    }
    return {
        "title": "Short commands, whole processes",
        "anchor": "envsync_help",
        "subject": "envsync_check",
        "rows": [series.row(k, labels[k]) for k in variants]
        + [
            stats("check_in_process", "fast check in-process (names, versions, size and mtime of each file)", fast),
            stats("record_load_in_process", "reading the env's file record in-process", loads),
            stats("stat_check_in_process", "one stat a recorded file in-process (the fast file check alone)", stat_only),
            stats("deep_check_in_process", "deep check in-process (every file rehashed, what `check --deep` runs)", deep),
        ],
        "figures": {"files_checked": files.count(record), "distributions": len(drift.installed(env))},
        "notes": [__doc__.split("\n\n", 1)[1].strip(), HOW_CHOSEN],
    }
