"""envsync against its peers, measured in one run on one machine.

    python -m benchmarks run [--quick] [--only SCENARIO ...] [--note TEXT]
    python -m benchmarks report [--results FILE]

`run` writes benchmarks/results/<date>.json (medians, min-max and every sample, the
machine described); `report` turns the newest of those files into docs/performance.md,
docs/performance.png and the README's "Speed and reliability, measured" table.
Each scenario alternates its sides after a warm-up, 5 rounds (--quick: 1, no warm-up,
the slowest pip variants left out: a check that the harness works, not figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report  # noqa: E402
from benchmarks.common import ROOT, log, machine  # noqa: E402
from benchmarks.context import Context  # noqa: E402
from benchmarks.scenarios import build, commands, kernels, launch, scaling  # noqa: E402

SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "build": build.run,
    "commands": commands.run,
    "launch": launch.run,
    "kernels": kernels.run,
    "scaling": scaling.run,
}
RESULTS = ROOT / "benchmarks" / "results"


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    reps = args.repetitions or (1 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="envsync-bench-"))
    started = time.time()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "quick": args.quick,
        "repetitions": reps,
        "command": "python -m benchmarks run" + (" --quick" if args.quick else "")
        + "".join(f" --only {s}" for s in args.only or ()),
        "machine": machine(args.note or ""),
        "scenarios": {},
    }
    ctx = Context(work=work, reps=reps, quick=args.quick)
    try:
        for name in args.only or SCENARIOS:
            t0 = time.monotonic()
            result["scenarios"][name] = SCENARIOS[name](ctx)
            result["scenarios"][name]["took_s"] = round(time.monotonic() - t0, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import os

    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"]["tools"] = ctx.versions
    result["took_s"] = round(time.time() - started, 1)
    out = args.output or RESULTS / f"{result['date']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out} ({result['took_s']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="measure and write benchmarks/results/<date>.json")
    r.add_argument("--quick", action="store_true", help="one round, no warm-up: checks the harness (< 3 min)")
    r.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)")
    r.add_argument("--repetitions", type=int, default=None, help="rounds per scenario (default 5, --quick 1)")
    r.add_argument("--note", help="a word on the machine's state, kept with the results (e.g. its load)")
    r.add_argument("--output", type=Path, help="write the results here instead")
    p = sub.add_parser("report", help="docs/performance.md, its plot and the README table from the newest results")
    p.add_argument("--results", type=Path, help="results file (default: the newest full run)")
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="where performance.md and .png go")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md", help="README whose table is replaced")
    args = ap.parse_args(argv)
    if args.command == "run":
        return run(args)
    return report.main(args.results or report.newest(RESULTS), args.docs, args.readme)


if __name__ == "__main__":
    raise SystemExit(main())
