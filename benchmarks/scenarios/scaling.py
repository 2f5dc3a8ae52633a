"""Scaling with the number of packages (a local index of generated wheels on 127.0.0.1), and disk shared by notebooks.

For 10, 50 and 200 generated packages (each a module of a few files) plus the kernel's
stand-in: `envsync lock NB --upgrade` (a full resolution through uv, whole process),
`envsync check NB` on the built env (whole process), and the size of the lock embedded
in the notebook. Disk: ten notebooks carrying the reference lock share one env in
envsync's store; ten venvs made for them with uv's copies take ten times one venv.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import BIN, ROOT, dir_bytes, log, run_timed, stats, uv_bin
from benchmarks.common import run as run_process
from benchmarks.context import Context
from envsync.settings import DEFAULT_INDEX

SIZES = (10, 50, 200)
QUICK_SIZES = (10, 20)  # two sizes, to see the lock grow; 50 took a quick run past 3 minutes
FILES_PER_PACKAGE = 5


def _index(root: Path, n: int) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.wheelhouse import LocalIndex

    index = LocalIndex(root)
    index.add("ipykernel", "6.0.0", requires=["comm>=0.1"])
    index.add("comm", "0.2.0")
    for i in range(n):
        module = f"gen{i:03d}"
        files = {f"{module}/__init__.py": f"__version__ = '1.0.{i}'\n"}
        files.update({f"{module}/part{j}.py": f"VALUE = {i * 100 + j}\n" * 20 for j in range(FILES_PER_PACKAGE - 1)})
        # Every tenth package depends on the one before it, so the resolver has edges to follow.
        requires = [f"gen{i - 1:03d}>=1"] if i % 10 == 9 else []
        index.add(f"gen{i:03d}", f"1.0.{i}", files=files, requires=requires)
    return index.start()


def _one_size(ctx: Context, n: int) -> dict[str, Any]:
    root = ctx.work / f"scale-{n}"
    index = _index(root / "index", n)
    try:
        env = ctx.env(ENVSYNC_ALLOWED_INDEXES=index.url, ENVSYNC_HOME=str(root / "home"))
        nb = root / f"scale{n}.ipynb"
        deps = [f"gen{i:03d}" for i in range(n)]
        run_process([BIN / "envsync", "init", nb, "--python", "3.11", "--environment", "linux-x86_64", "--index", index.url,
             *deps], env=env)
        reps = 1 if ctx.quick else max(ctx.reps, 3)
        lock = [run_timed([BIN / "envsync", "lock", nb, "--upgrade"], env=env) for _ in range(reps)]
        build = run_timed([BIN / "envsync", "sync", nb], env=env)
        check = [run_timed([BIN / "envsync", "check", nb], env=env) for _ in range(reps * 2)]
        manifest = json.loads(nb.read_text())["metadata"]["envsync"]
        lock_bytes = len(json.dumps(manifest["lock"], indent=1).encode())
    finally:
        index.stop()
    log(f"  {n} packages: lock {min(lock):.2f}s build {build:.2f}s check {min(check):.3f}s lock {lock_bytes} B")
    return {
        "packages": n,
        "lock": stats(f"lock_{n}", f"`envsync lock NB --upgrade`, {n} packages", lock),
        "check": stats(f"check_{n}", f"`envsync check NB`, {n} packages", check),
        "build_s": build,
        "lock_bytes": lock_bytes,
        "notebook_bytes": nb.stat().st_size,
    }


def _shared_disk(ctx: Context) -> dict[str, float]:
    """Disk of ten notebooks with the reference lock: envsync's store vs ten uv venvs (copies, hard links)."""
    for i in range(10):
        copy = ctx.work / "ten" / f"nb{i}.ipynb"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(ctx.ref.notebook, copy)
        ctx.envsync("sync", copy)
    one = ctx.work / "ten" / "venv"
    out: dict[str, float] = {"envsync_store_mb": dir_bytes(ctx.home / "envs") / 1e6}
    for link in ("copy", "hardlink"):
        shutil.rmtree(one, ignore_errors=True)
        env = ctx.env()
        run_process([uv_bin(), "venv", "--no-config", "--quiet", "--python", ctx.ref.interp.path, one], env=env)
        run_process([uv_bin(), "pip", "sync", "--no-config", "--quiet", "--require-hashes", "--python", one / "bin" / "python",
             "--index-url", DEFAULT_INDEX, "--link-mode", link, ctx.ref.requirements], env=env)
        out[f"ten_uv_{link}_venvs_own_mb"] = 10 * dir_bytes(one, own_only=True) / 1e6
    return out


def run(ctx: Context) -> dict[str, Any]:
    log("scaling: lock, check and lock size by package count; disk of ten notebooks")
    sizes = [_one_size(ctx, n) for n in (QUICK_SIZES if ctx.quick else SIZES)]
    disk = _shared_disk(ctx) if not ctx.quick else {}
    return {
        "title": "Scaling with the package count, and disk shared by notebooks",
        "rows": [s["lock"] for s in sizes] + [s["check"] for s in sizes],
        "sizes": [{k: v for k, v in s.items() if k not in ("lock", "check")} for s in sizes],
        "figures": disk,
        "notes": [__doc__.split("\n\n", 1)[1].strip()],
    }

