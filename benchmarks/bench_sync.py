"""Environments: envsync's build, reuse and drift check against raw uv and pip, as ratios in one run.

    .venv/bin/python benchmarks/bench_sync.py [--repetitions 5] [--pip-repetitions N] [--json out.json]

Resolves `numpy pandas matplotlib requests ipykernel` from the public index (uv pip
compile --universal --generate-hashes, pylock.toml, Python 3.11), keeps the
linux-x86_64 cp311 wheels as an envsync Lock, warms uv's cache with one build, then
measures, N times each, medians:
  1. envsync's first build of the lock (warm uv cache, on a machine where envsync has
     run before: its store and remembered interpreter exist; the env is deleted before
     each repetition) vs `uv venv` + `uv pip sync --require-hashes` of the same file;
     also the same build in a brand-new ENVSYNC_HOME, which pays interpreter discovery
  2. the build vs `python -m venv` + `pip install --require-hashes` (pip's cache warm)
  3. reuse of an existing env vs a build
  4. the drift check of the ~50-package env (names, versions and every installed file's
     size and mtime): in-process, and as a whole `envsync check NB` process; the deep
     check (every file rehashed against RECORD); next to `pip freeze` and `pip check`
     run by this venv's pip with `--python <env python>` (uv-built envs have no pip)
  5. `uv pip sync` with `--link-mode hardlink` (uv's fallback on a filesystem without
     reflinks) vs `--link-mode copy` (what envsync uses), and the disk each env takes
     that no other env or uv's cache shares
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envsync import proc  # noqa: E402
from envsync.env import drift, interpreters, store  # noqa: E402
from envsync.env.installers import env_python  # noqa: E402
from envsync.formats.requirements import hashed_requirements  # noqa: E402
from envsync.lock.model import Artifact, Lock, LockedPackage, compute_fingerprint, packages_for  # noqa: E402
from envsync.lock.targets import TARGETS, wheel_fits  # noqa: E402
from envsync.notebook.file import create_notebook, new_notebook_bytes, read_notebook, write_manifest  # noqa: E402
from envsync.notebook.manifest import Manifest  # noqa: E402
from envsync.ops.sync import sync  # noqa: E402
from envsync.settings import DEFAULT_INDEX, Settings  # noqa: E402


def uv_bin() -> str:
    import uv

    return str(uv.find_uv_bin())


STACK = ["numpy", "pandas", "matplotlib", "requests", "ipykernel"]


def resolve_lock(work: Path) -> Lock:
    """The reference stack as a Lock with only the wheels linux-x86_64 CPython 3.11 installs."""
    (work / "requirements.in").write_text("".join(f"{r}\n" for r in STACK))
    proc.run(
        [
            uv_bin(),
            "pip",
            "compile",
            "--no-config",
            "--universal",
            "--generate-hashes",
            "-o",
            "pylock.toml",
            "--python-version",
            "3.11",
            "requirements.in",
        ],
        cwd=work,
        timeout=600,
    )
    data = tomllib.loads((work / "pylock.toml").read_text())
    packages = []
    for raw in data["packages"]:
        wheels = tuple(
            Artifact(w["url"].rsplit("/", 1)[1], w["hashes"]["sha256"])
            for w in raw.get("wheels", [])
            if wheel_fits(w["url"].rsplit("/", 1)[1], TARGETS["linux-x86_64"], "3.11")
        )
        sdist = raw.get("sdist")
        packages.append(
            LockedPackage(
                name=raw["name"],
                version=raw["version"],
                marker=raw.get("marker"),
                index=DEFAULT_INDEX,
                wheels=wheels,
                sdist=None
                if wheels or not sdist
                else Artifact(sdist["url"].rsplit("/", 1)[1], sdist["hashes"]["sha256"]),
            )
        )
    pkgs = tuple(packages)
    return Lock(
        requires_python="==3.11.*",
        packages=pkgs,
        inputs="sha256:" + "0" * 64,
        fingerprint=compute_fingerprint(pkgs),
    )


def notebook_for(lock: Lock, path: Path) -> Lock:
    """Write a notebook whose manifest carries `lock` (its inputs made current); the lock it holds."""
    manifest = Manifest(
        project="bench", requires_python=lock.requires_python, dependencies=tuple(STACK),
        environments=("linux-x86_64",),
    )
    current = dataclasses.replace(lock, inputs=manifest.inputs)
    create_notebook(path, new_notebook_bytes(manifest.kernel_name, "bench"))
    write_manifest(read_notebook(path), dataclasses.replace(manifest, lock=current).to_dict())
    return current


def own_bytes(env: Path) -> int:
    """Disk used by files of `env` that no other path links (a hard-linked file is shared)."""
    total = 0
    for root, _dirs, names in os.walk(env):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            if st.st_nlink == 1:
                total += st.st_blocks * 512
    return total


def timed(fn: Callable[[], object]) -> float:
    # Dirty pages left by the previous measure are written out first: an fsync in this one
    # must not pay for copies another measure made (envsync fsyncs, raw uv does not).
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--pip-repetitions", type=int, default=None, help="default: --repetitions")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    reps = args.repetitions
    pip_reps = args.pip_repetitions if args.pip_repetitions is not None else reps

    # SIGTERM ends the run like Ctrl-C: proc.run stops its child and the work dir is removed.
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="envsync-bench-"))
    try:
        nb = work / "bench.ipynb"
        lock = notebook_for(resolve_lock(work), nb)
        interp = interpreters.find(lock.requires_python)
        pkgs = packages_for(lock, interp.marker_env)
        req = work / "requirements.txt"
        req.write_text(hashed_requirements(pkgs))
        uv = uv_bin()

        home = Settings(home=work / "home")

        def envsync_build(settings: Settings) -> None:
            sync(lock=lock, project="bench", notebook=work / "bench.ipynb", settings=settings)

        def delete_envs() -> None:
            for path in store.dirs_of(home, store.env_key(lock.fingerprint, interp.tag)):
                store.discard(home, path)

        def raw_uv(i: int, link: str | None = None) -> None:
            env = work / f"uv-{link or 'default'}-{i}"
            proc.run([uv, "venv", "--no-config", "--python", interp.path, env], timeout=300)
            proc.run(
                [
                    uv,
                    "pip",
                    "sync",
                    "--no-config",
                    "--require-hashes",
                    "--python",
                    env_python(env),
                    "--index-url",
                    DEFAULT_INDEX,
                    *(["--link-mode", link] if link else []),
                    req,
                ],
                timeout=1800,
            )

        def raw_pip(i: int) -> None:
            env = work / f"pip-{i}"
            proc.run([interp.path, "-m", "venv", env], timeout=300)
            proc.run(
                [
                    env_python(env),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--require-hashes",
                    "--index-url",
                    DEFAULT_INDEX,
                    "-r",
                    req,
                ],
                timeout=3600,
            )

        print(
            f"lock: {len(lock.packages)} packages, {len(pkgs)} for {interp.tag} on linux; "
            f"python {interp.version}; uv cache warm-up ...",
            file=sys.stderr,
        )
        envsync_build(home)  # fills uv's cache and envsync's state; not measured

        build, fresh, uvs, reuse, checks = [], [], [], [], []
        checks_cli, deep, freeze, pipcheck, hardlinks, copies = [], [], [], [], [], []
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        child_env = {**proc.clean_env(), "ENVSYNC_HOME": str(home.home)}
        for i in range(reps):
            delete_envs()
            # Alternate the order so neither side always runs on a cache the other just touched.
            pair = [
                lambda: build.append(timed(lambda: envsync_build(home))),
                lambda i=i: uvs.append(timed(lambda: raw_uv(i))),
            ]
            for run in pair if i % 2 == 0 else reversed(pair):
                run()
            reuse.append(timed(lambda: envsync_build(home)))
            rec = store.ready_envs(home, lock.fingerprint)[0]
            checks.append(timed(lambda rec=rec: drift.check(rec, lock)))
            checks_cli.append(
                timed(lambda: proc.run([sys.executable, "-m", "envsync", "check", nb], env=child_env, timeout=120))
            )
            deep.append(timed(lambda rec=rec: drift.check(rec, lock, deep=True)))
            freeze.append(timed(lambda rec=rec: proc.run([*pip, "--python", rec.python, "freeze"], timeout=120)))
            pipcheck.append(timed(lambda rec=rec: proc.run([*pip, "--python", rec.python, "check"], timeout=120)))
            links = [
                lambda i=i: hardlinks.append(timed(lambda: raw_uv(i, "hardlink"))),
                lambda i=i: copies.append(timed(lambda: raw_uv(i, "copy"))),
            ]
            for run in links if i % 2 == 0 else reversed(links):
                run()
            if i:  # the first pair stays for the disk figures
                for link in ("hardlink", "copy"):
                    shutil.rmtree(work / f"uv-{link}-{i}", ignore_errors=True)
            fresh.append(timed(lambda i=i: envsync_build(Settings(home=work / f"fresh-{i}"))))
            print(
                f"  rep {i + 1}/{reps}: build {build[-1]:.2f}s uv {uvs[-1]:.2f}s reuse {reuse[-1] * 1000:.0f}ms "
                f"check {checks[-1] * 1000:.1f}ms (process {checks_cli[-1] * 1000:.0f}ms, deep {deep[-1]:.2f}s) "
                f"hardlink {hardlinks[-1]:.2f}s copy {copies[-1]:.2f}s fresh-home build {fresh[-1]:.2f}s",
                file=sys.stderr,
            )
        rec = store.ready_envs(home, lock.fingerprint)[0]
        installed = len(drift.installed(rec.path))
        _problems, files_checked = drift.file_problems(rec.path, drift.installed(rec.path))
        disk = {
            "hardlink_own_mb": own_bytes(work / "uv-hardlink-0") / 1e6,
            "copy_own_mb": own_bytes(work / "uv-copy-0") / 1e6,
            "envsync_env_own_mb": own_bytes(rec.path) / 1e6,
        }

        pips = []
        if pip_reps:
            raw_pip(-1)  # warm pip's own cache too, as uv's was
        for i in range(pip_reps):
            pips.append(timed(lambda i=i: raw_pip(i)))
            print(f"  pip rep {i + 1}/{pip_reps}: {pips[-1]:.1f}s", file=sys.stderr)

        med = {
            k: statistics.median(v)
            for k, v in {
                "envsync_build": build,
                "envsync_build_fresh_home": fresh,
                "uv_venv_sync": uvs,
                "reuse": reuse,
                "drift_check": checks,
                "check_process": checks_cli,
                "deep_check": deep,
                "pip_freeze": freeze,
                "pip_check": pipcheck,
                "uv_sync_hardlink": hardlinks,
                "uv_sync_copy": copies,
            }.items()
        }
        if pips:
            med["pip_venv_install"] = statistics.median(pips)
        figures = {
            "packages_locked": len(lock.packages),
            "packages_installed": installed,
            "python": interp.version,
            "repetitions": reps,
            "pip_repetitions": pip_reps,
            "medians_s": med,
            "build_vs_uv": med["envsync_build"] / med["uv_venv_sync"],
            "fresh_home_build_vs_uv": med["envsync_build_fresh_home"] / med["uv_venv_sync"],
            "pip_vs_build": med.get("pip_venv_install", float("nan")) / med["envsync_build"],
            "reuse_vs_build": med["reuse"] / med["envsync_build"],
            "drift_check_ms": med["drift_check"] * 1000,
            "files_checked": files_checked,
            "disk": disk,
        }
        print(render(figures))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def render(f: dict[str, object]) -> str:
    m = f["medians_s"]
    d = f["disk"]
    assert isinstance(m, dict) and isinstance(d, dict)
    pip = f"{m['pip_venv_install']:.1f} s" if "pip_venv_install" in m else "not run"
    return "\n".join(
        [
            f"{f['packages_installed']} distributions installed ({f['packages_locked']} locked), "
            f"CPython {f['python']}, medians of {f['repetitions']} (pip: {f['pip_repetitions']})",
            "",
            "| measure | median | ratio | goal |",
            "|---|---|---|---|",
            f"| `uv venv` + `uv pip sync --require-hashes` | {m['uv_venv_sync']:.2f} s | | |",
            f"| envsync first build of the lock, warm uv cache | {m['envsync_build']:.2f} s "
            f"| build / uv = {f['build_vs_uv']:.2f}x | <= 1.15x |",
            f"| the same in a brand-new ENVSYNC_HOME (+ interpreter discovery) "
            f"| {m['envsync_build_fresh_home']:.2f} s | fresh / uv = {f['fresh_home_build_vs_uv']:.2f}x | |",
            f"| `python -m venv` + `pip install --require-hashes` | {pip} "
            f"| pip / build = {f['pip_vs_build']:.0f}x | |",
            f"| envsync reuse of the built env | {m['reuse'] * 1000:.0f} ms "
            f"| reuse / build = {f['reuse_vs_build']:.1%} | < 10% |",
            f"| drift check in-process: names, versions, {f['files_checked']} files' size and mtime "
            f"| {f['drift_check_ms']:.1f} ms | | < 100 ms |",
            f"| `envsync check NB`, whole process | {m['check_process'] * 1000:.0f} ms | | |",
            f"| deep check in-process: every file rehashed | {m['deep_check']:.2f} s | | |",
            f"| `pip --python ENV freeze` (this venv's pip) | {m['pip_freeze'] * 1000:.0f} ms | | |",
            f"| `pip --python ENV check` (this venv's pip) | {m['pip_check'] * 1000:.0f} ms | | |",
            f"| `uv venv` + `uv pip sync --link-mode hardlink` | {m['uv_sync_hardlink']:.2f} s "
            f"| | {d['hardlink_own_mb']:.0f} MB own |",
            f"| `uv venv` + `uv pip sync --link-mode copy` | {m['uv_sync_copy']:.2f} s "
            f"| copy / hardlink = {m['uv_sync_copy'] / m['uv_sync_hardlink']:.2f}x | {d['copy_own_mb']:.0f} MB own |",
            f"| envsync's env (copies) | | | {d['envsync_env_own_mb']:.0f} MB own |",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
