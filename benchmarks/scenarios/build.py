"""First build of the reference lock with a warm cache, as whole processes, against uv, juv and pip.

Each round sets aside the env envsync built (and each peer's venv) and builds every variant
once, in alternating order; uv's and pip's caches were warmed by one unmeasured round. Then
the builds that take seconds (envsync's and the uv and juv ones) run twice as many rounds
again, the same way: the machine's noise is larger than envsync's share of a build. The
builds that hard-link from uv's cache (uv's default, juv) have a warm cache of their own: a
hard link changes a cached file's ctime, and envsync hashes again every file whose cached
source changed since it was last hashed, so sharing one cache made every envsync build that
followed a hard-linking one hash all its files (1-2 s more here). A user who also installs
the same wheels with hard links from the cache envsync uses pays that once after each such
install.
envsync asks uv for the wheels from its cache alone first (`--offline`), and raw `uv pip sync`
asks the index for every package's page again: the `--offline` row is raw uv doing what
envsync does.
Nothing is deleted until every figure is taken: on this machine's ext4 (no journal), files
created within a minute or more of a mass delete skip each freed inode, which made a build
right after a delete several times slower than the same build later. The pip venvs (with
bytecode, pip's default) are kept for the kernels scenario.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks import reference
from benchmarks.common import BIN, Series, dir_bytes, log, run_timed, timed, uv_bin
from benchmarks.context import Context, settle
from envsync.settings import DEFAULT_INDEX

WHY_COPIES = (
    "Why copies: uv 0.13 on Linux hard-links files from its cache, and `--link-mode clone` falls back to "
    "hard links where the filesystem has no reflinks (on ext4 an env's file had the inode of uv's cached "
    "copy). With hard links, an edit in one env is an edit of uv's cache and of every env built from it. "
    "The price is the copying and the disk (the `uv_copy_own_mb` and `uv_hardlink_own_mb` figures): see "
    "`envsync/env/installers/uv.py`."
)


def linking_cache(ctx: Context) -> dict[str, str]:
    """A uv cache of their own for the builds that hard-link from it (uv's default, juv).

    A hard link to a cached file changes that file's ctime, and envsync's memo of cached
    files already hashed is keyed by it: sharing the cache, every hard-linking build made the
    next envsync build hash all 11,847 files again (1-2 s), a cost of the order of the runs,
    not of envsync's steady state. docs/performance.md's notes say what it costs a user who
    also installs with hard links from the same cache.
    """
    return {"UV_CACHE_DIR": str(ctx.work / "uv-cache-hardlinks")}


def pip_venv(ctx: Context, dest: Path, *, compile_bytecode: bool) -> float:
    """`python -m venv` + `pip install --require-hashes` of the reference pins; seconds."""
    ctx.set_aside(dest)
    env = ctx.env()

    def go() -> None:
        run_timed([ctx.ref.interp.path, "-m", "venv", dest], env=env)
        run_timed([dest / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                   "--require-hashes", "--index-url", DEFAULT_INDEX, *([] if compile_bytecode else ["--no-compile"]),
                   "-r", ctx.ref.requirements], env=env)

    return timed(go)


def uv_venv(ctx: Context, dest: Path, link: str | None, *, compile_bytecode: bool = False,
            offline: bool = False) -> float:
    ctx.set_aside(dest)
    env, uv = (ctx.env(**linking_cache(ctx)) if link == "hardlink" else ctx.env()), uv_bin()

    def go() -> None:
        run_timed([uv, "venv", "--no-config", "--quiet", "--python", ctx.ref.interp.path, dest], env=env)
        run_timed([uv, "pip", "sync", "--no-config", "--quiet", "--require-hashes", "--python", dest / "bin" / "python",
                   "--index-url", DEFAULT_INDEX, *(["--link-mode", link] if link else []),
                   *(["--compile-bytecode"] if compile_bytecode else []), *(["--offline"] if offline else []),
                   ctx.ref.requirements],
                  env=env)

    return timed(go)


FAST = ("envsync_sync", "uv_copy", "uv_copy_offline", "uv_hardlink", "juv_venv")


def run(ctx: Context) -> dict[str, Any]:
    ref = ctx.ref
    juv_nb = reference.juv_notebook(ctx.work / "juv-build.ipynb")
    juv = ctx.tool("juv")
    out = ctx.work / "build"
    out.mkdir(exist_ok=True)
    count = {"n": 0}

    compiles: list[float] = []

    def envsync_sync(*extra: str) -> float:
        ctx.delete_ref_envs()
        took = run_timed([BIN / "envsync", "sync", ref.notebook, *extra], env=ctx.env())
        # The bytecode compile it leaves running must not slow the next measure down.
        compiles.append(settle(ctx.home))
        return took

    def juv_venv() -> float:
        dest = out / "juv"
        ctx.set_aside(dest)
        return run_timed([juv, "venv", "--from", juv_nb, dest], env=ctx.env(**linking_cache(ctx)), cwd=ctx.work)

    def pip_with_bytecode() -> float:
        count["n"] += 1
        return pip_venv(ctx, out / f"pip-{count['n']}", compile_bytecode=True)

    variants = {
        "envsync_sync": envsync_sync,
        "uv_copy": lambda: uv_venv(ctx, out / "uv-copy", "copy"),
        "uv_copy_offline": lambda: uv_venv(ctx, out / "uv-copy-offline", "copy", offline=True),
        "uv_hardlink": lambda: uv_venv(ctx, out / "uv-hardlink", "hardlink"),
        "juv_venv": juv_venv,
        "pip_bytecode": pip_with_bytecode,
        "pip_no_bytecode": lambda: pip_venv(ctx, out / "pip-nc", compile_bytecode=False),
        "envsync_sync_pip": lambda: envsync_sync("--backend", "pip"),
    }
    if ctx.quick:  # pip builds take tens of seconds each: the quick run leaves them out
        for slow in ("pip_bytecode", "pip_no_bytecode", "envsync_sync_pip"):
            variants.pop(slow)
    log(f"build: {ref.installed} distributions, first build with a warm cache")
    series = Series()
    series.alternate(variants, ctx.reps, warmup=not ctx.quick)
    if not ctx.quick:
        # A build here swings by a second or more from one minute to the next, while envsync's
        # own work is a few tenths: the uv builds, seconds each, get twice as many rounds
        # again (pip's, tens of seconds each, keep theirs).
        fast = {k: v for k, v in variants.items() if k in FAST}
        series.alternate(fast, 2 * ctx.reps, warmup=False)
    if "envsync_sync_pip" in variants:  # the scenarios after this one get the uv backend's env
        ctx.delete_ref_envs()
        ctx.envsync("sync", ref.notebook)
    labels = {
        "envsync_sync": "`envsync sync NB` (whole process; copies, RECORD check)",
        "uv_copy": "`uv venv` + `uv pip sync --require-hashes --link-mode copy`",
        "uv_copy_offline": "the same with `--offline` (from uv's cache, as envsync asks first)",
        "uv_hardlink": "`uv venv` + `uv pip sync --require-hashes` (uv's default: hard links)",
        "juv_venv": "`juv venv --from NB` (resolves, then uv's hard links)",
        "pip_bytecode": "`python -m venv` + `pip install --require-hashes` (compiles bytecode)",
        "pip_no_bytecode": "`python -m venv` + `pip install --require-hashes --no-compile`",
        "envsync_sync_pip": "`envsync sync NB --backend pip`",
    }
    disk = {
        "uv_copy_own_mb": dir_bytes(out / "uv-copy", own_only=True) / 1e6,
        "uv_hardlink_own_mb": dir_bytes(out / "uv-hardlink", own_only=True) / 1e6,
    }
    return {
        "title": f"First build of the reference lock ({ref.installed} distributions), warm cache",
        "anchor": "uv_copy",
        "subject": "envsync_sync",
        "rows": [series.row(k, labels[k]) for k in variants],
        "figures": {"distributions": ref.installed, "locked": len(ref.lock.packages), **disk,
                    "background_compile_s_median": statistics.median(compiles) if compiles else None},
        "notes": [__doc__.split("\n\n", 1)[1].strip(), WHY_COPIES],
    }
