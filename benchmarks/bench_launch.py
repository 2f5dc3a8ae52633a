"""Warm `envsync launch` (env already built) to the first 200 on GET /api, against a bare
`jupyter kernelgateway` start to the same point, in one run, alternating.

    .venv/bin/python benchmarks/bench_launch.py [-n 5] [--json]

The envsync side is the whole command a user types: CLI start, manifest read and
schema check, lock staleness and last-run diff, env reuse check (drift, in-process),
kernelspec write, gateway spawn and readiness. Needs the public index once, to build
the quick-start notebook's env before timing.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_gateway_start import TIMEOUT, first_200, free_port  # noqa: E402
from envsync import proc  # noqa: E402

BIN = Path(sys.executable).parent


def time_bare() -> float:
    port, token = free_port(), secrets.token_urlsafe(32)
    env = proc.clean_env({"KG_AUTH_TOKEN": token})
    start = time.perf_counter()
    child = proc.spawn([str(BIN / "jupyter"), "kernelgateway", "--ip", "127.0.0.1", "--port", str(port)],
                       env=env, stdout=proc.DEVNULL, stderr=proc.DEVNULL)
    try:
        first_200(port, token, child, time.monotonic() + TIMEOUT)
        return time.perf_counter() - start
    finally:
        proc.shutdown(child)


def time_launch(notebook: Path, home: Path) -> float:
    port, token = free_port(), secrets.token_urlsafe(32)
    env = proc.clean_env({"ENVSYNC_HOME": str(home), "ENVSYNC_TOKEN": token})
    start = time.perf_counter()
    child = proc.spawn([str(BIN / "envsync"), "launch", str(notebook), "--port", str(port), "--json"],
                       env=env, stdout=proc.DEVNULL, stderr=proc.DEVNULL)
    try:
        first_200(port, token, child, time.monotonic() + TIMEOUT)
        return time.perf_counter() - start
    finally:
        proc.shutdown(child, interrupt_timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envsync-bench-launch-") as tmp:
        work = Path(tmp)
        notebook = work / "quickstart.ipynb"
        shutil.copy(ROOT / "examples" / "quickstart.ipynb", notebook)
        home = work / "home"
        built = proc.run([str(BIN / "envsync"), "sync", str(notebook)],
                         env=proc.clean_env({"ENVSYNC_HOME": str(home)}), timeout=900, check=False)
        if built.returncode != 0:
            sys.stderr.write(built.stderr)
            return 1
        time_launch(notebook, home)  # warm-up: page cache, .pyc files
        time_bare()
        bare_t, launch_t = [], []
        for _ in range(args.n):
            bare_t.append(time_bare())
            launch_t.append(time_launch(notebook, home))
    result = {
        "repetitions": args.n,
        "bare_kernelgateway_median_s": round(statistics.median(bare_t), 3),
        "envsync_launch_warm_median_s": round(statistics.median(launch_t), 3),
        "ratio": round(statistics.median(launch_t) / statistics.median(bare_t), 3),
        "bare_all": [round(t, 3) for t in bare_t],
        "launch_all": [round(t, 3) for t in launch_t],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'start to first 200 on GET /api':40} {'median':>8}")
        print(f"{'jupyter kernelgateway (anchor)':40} {result['bare_kernelgateway_median_s']:>7.3f}s")
        print(f"{'envsync launch, env already built':40} {result['envsync_launch_warm_median_s']:>7.3f}s")
        print(f"{'ratio envsync / anchor':40} {result['ratio']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
