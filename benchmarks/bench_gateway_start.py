"""Gateway start-up: envsync's `gateway.start` against bare `jupyter kernelgateway`, in one run.

Both are timed from the moment the process is spawned to the first 200 on GET /api with
the token, polled at the same interval. Runs alternate so that drift hits both alike.

    .venv/bin/python benchmarks/bench_gateway_start.py [-n 5] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envsync import proc  # noqa: E402
from envsync.gateway import process as gateway  # noqa: E402
from envsync.gateway.spec import GatewaySpec  # noqa: E402

POLL = 0.02
TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_200(port: int, token: str, child: proc.Popen[bytes], deadline: float) -> None:
    """Poll GET /api until it answers 200; fail if the child exits or the deadline passes."""
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"process exited with {child.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/api", headers={"Authorization": f"token {token}"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(POLL)
    raise RuntimeError("no 200 before the deadline")


def bare(command: list[str]) -> Callable[[], float]:
    """Time one start of a bare Kernel Gateway command (the anchor)."""

    def run() -> float:
        port, token = free_port(), secrets.token_urlsafe(32)
        env = proc.clean_env({"KG_AUTH_TOKEN": token})
        start = time.perf_counter()
        child = proc.spawn(
            [*command, "--ip", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=proc.DEVNULL,
            stderr=proc.DEVNULL,
        )
        try:
            first_200(port, token, child, time.monotonic() + TIMEOUT)
            return time.perf_counter() - start
        finally:
            proc.shutdown(child)

    return run


def envsync_start(data_dir: Path) -> Callable[[], float]:
    """Time one `gateway.start` (it returns on the first 200 with the token)."""

    def run() -> float:
        config = GatewaySpec("envsync-bench", data_dir, log_path=data_dir / "gw.log")
        start = time.perf_counter()
        gw = gateway.start(config, ready_timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
        gateway.stop(gw)
        return elapsed

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--repeat", type=int, default=5, help="runs per variant (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        spec_dir = data_dir / "kernels" / "envsync-bench"
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "bench"}))
        variants: dict[str, Callable[[], float]] = {
            "jupyter kernelgateway (anchor)": bare([str(bindir / "jupyter"), "kernelgateway"]),
            "python -m kernel_gateway": bare([sys.executable, "-m", "kernel_gateway"]),
            "envsync gateway.start": envsync_start(data_dir),
        }
        for run in variants.values():  # warm the page cache; not counted
            run()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, run in variants.items():
                times[name].append(run())

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    anchor = medians["jupyter kernelgateway (anchor)"]
    ratio = medians["envsync gateway.start"] / anchor
    if args.json:
        result = {
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
            "median_s": medians,
            "runs_s": times,
            "ratio_envsync_to_anchor": ratio,
        }
        print(json.dumps(result, indent=2))
        return 0
    width = max(len(n) for n in medians)
    print(f"{'start to first 200 on GET /api':<{width}}  median    min      max   (n={args.repeat})")
    for name, ts in times.items():
        print(f"{name:<{width}}  {medians[name]:6.3f}s  {min(ts):6.3f}s  {max(ts):6.3f}s")
    print(f"ratio envsync / anchor: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
