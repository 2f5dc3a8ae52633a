"""CLI start-up: `envsync --help` as a whole process, against the interpreter's floor and juv.

    .venv/bin/python benchmarks/bench_cli_startup.py [--repetitions 20] [--write-doc]

In one run, interleaved, N times each, medians:
  1. `.venv/bin/envsync --help`           the console script, whole process
  2. `.venv/bin/python -c pass`           the floor: the same interpreter doing nothing
  3. `juv --version`                      the anchor: juv's console script, installed into a
                                          throwaway venv under /tmp (not `uv tool run juv`,
                                          which would add uv's own start-up)
then the five slowest imports (self time) of `python -X importtime -m envsync --help`.
With --write-doc the table replaces the "CLI start-up" section of docs/performance.md
(other sections are kept; the file is created if missing).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "performance.md"
SECTION = "CLI start-up"


def uv_bin() -> str:
    import uv

    return str(uv.find_uv_bin())


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("UV_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    return env


def install_juv(where: Path) -> tuple[Path | None, str]:
    """juv's console script in a fresh venv, or None and the reason it could not be installed."""
    try:
        subprocess.run(
            [uv_bin(), "venv", "--no-config", "--quiet", "--python", sys.executable, str(where)],
            check=True,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=120,
        )
        subprocess.run(
            [
                uv_bin(),
                "pip",
                "install",
                "--no-config",
                "--quiet",
                "--python",
                str(where / "bin" / "python"),
                "juv",
            ],
            check=True,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=600,
        )
    except subprocess.CalledProcessError as exc:
        return None, (exc.stderr or "").strip().splitlines()[-1:][
            0
        ] if exc.stderr else f"exit {exc.returncode}"
    except subprocess.TimeoutExpired:
        return None, "installation timed out"
    juv = where / "bin" / "juv"
    version = subprocess.run(
        [str(juv), "--version"], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    return juv, version


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    res = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(), timeout=120
    )
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}")
    return elapsed


def measure(commands: dict[str, list[str]], repetitions: int) -> dict[str, list[float]]:
    for argv in commands.values():  # warm the page cache and any .pyc files
        time_once(argv)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repetitions):
        for name, argv in commands.items():  # interleaved, so drift hits every row alike
            samples[name].append(time_once(argv))
    return samples


def top_imports(n: int) -> tuple[list[tuple[str, int, int]], int]:
    """(module, self µs, cumulative µs) of the n slowest imports by self time, and the sum of all."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "envsync", "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=True,
    )
    rows = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(.*)$", line)
        if m:
            rows.append((m.group(3).strip(), int(m.group(1)), int(m.group(2))))
    rows.sort(key=lambda r: r[1], reverse=True)
    return rows[:n], sum(r[1] for r in rows)


def render(
    samples: dict[str, list[float]],
    labels: dict[str, str],
    imports: tuple[list[tuple[str, int, int]], int],
    repetitions: int,
    juv_note: str,
) -> str:
    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    floor = med["floor"]
    anchor = med.get("juv")
    lines = [
        f"## {SECTION}",
        "",
        f"Measured by `benchmarks/bench_cli_startup.py` on {time.strftime('%Y-%m-%d')}: {repetitions} runs each, "
        f"interleaved, median wall time of the whole process (Python {sys.version.split()[0]}, {os.cpu_count()} cores). "
        f"Anchor: {juv_note}.",
        "",
        "| command | median | min | × python floor | × juv --version |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, argv_label in labels.items():
        if key not in med:
            continue
        vs_juv = f"{med[key] / anchor:.2f}" if anchor else "n/a"
        lines.append(
            f"| `{argv_label}` | {med[key]:.0f} ms | {min(samples[key]) * 1000:.0f} ms | "
            f"{med[key] / floor:.2f} | {vs_juv} |"
        )
    lines += [
        "",
        f"`envsync --help` costs {med['envsync'] - floor:.0f} ms above the bare interpreter"
        + (f" and {med['envsync'] / anchor:.2f}× juv's start-up." if anchor else "."),
        "",
        "Slowest imports of `python -X importtime -m envsync --help` (self time, one run):",
        "",
        "| module | self | cumulative |",
        "|---|---:|---:|",
    ]
    top, total_us = imports
    for name, self_us, cum_us in top:
        lines.append(f"| `{name.strip()}` | {self_us / 1000:.1f} ms | {cum_us / 1000:.1f} ms |")
    lines += ["", f"Sum of all import self times: {total_us / 1000:.1f} ms.", ""]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace (or add) this benchmark's section; every other section of the file is kept."""
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Performance\n"
    pattern = re.compile(rf"^## {re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_name(f".{DOC.name}.tmp")
    tmp.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, DOC)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repetitions", type=int, default=20)
    ap.add_argument(
        "--write-doc", action="store_true", help=f"update the '{SECTION}' section of {DOC.relative_to(ROOT)}"
    )
    args = ap.parse_args()

    envsync = VENV_BIN / "envsync"
    commands = {"envsync": [str(envsync), "--help"], "floor": [sys.executable, "-c", "pass"]}
    labels = {"envsync": "envsync --help", "floor": "python -c pass", "juv": "juv --version"}
    with tempfile.TemporaryDirectory(prefix="envsync-bench-juv-") as tmp:
        juv, juv_version = install_juv(Path(tmp) / "venv")
        if juv is not None:
            commands["juv"] = [str(juv), "--version"]
            juv_note = f"`juv --version` ({juv_version}), console script in a throwaway venv"
        else:
            juv_note = f"juv could not be installed ({juv_version})"
        samples = measure(commands, args.repetitions)
    text = render(samples, labels, top_imports(5), args.repetitions, juv_note)
    print(text)
    if args.write_doc:
        write_section(text)
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
