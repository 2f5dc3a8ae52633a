"""docs/performance.md, docs/performance.png and the README's figures, generated from one results file."""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

from benchmarks import explain

README_SECTION = "## Speed and reliability, measured"
# Rows measuring someone else's tool (gray in the plot); every other row is envsync's (blue).
PEER_PREFIXES = ("kernelgateway", "python_m_kernel_gateway", "juv_", "marimo_", "uv_", "pip_", "python_floor")

# (scenario, subject, peer, what the ratio says, goal or "") in the order the ratios table shows them.
RATIOS: list[tuple[str, str, str, str, str]] = [
    ("commands", "envsync_check", "envsync_help", "`envsync check` / `envsync --help`", "≤ 1.6×"),
    ("commands", "envsync_sync_reuse", "envsync_help", "`envsync sync` (reuse) / `envsync --help`", "≤ 1.6×"),
    ("commands", "envsync_check", "pip_freeze", "`envsync check` / `pip freeze`", ""),
    ("commands", "envsync_check", "pip_check", "`envsync check` / `pip check`", ""),
    ("kernels", "envsync_first", "pip_first", "first kernel: new envsync env / new pip venv", "≤ 1.25×"),
    ("kernels", "envsync_later", "pip_later", "later kernel: envsync env / pip venv", ""),
    ("build", "envsync_sync", "uv_copy", "build: `envsync sync` / uv with copies (envsync's link mode)", "≤ 1.15×"),
    ("build", "envsync_sync", "uv_copy_offline", "build: `envsync sync` / uv with copies, `--offline`", ""),
    ("build", "envsync_sync", "uv_hardlink", "build: `envsync sync` / uv with hard links (uv's default)", ""),
    ("build", "uv_copy", "uv_hardlink", "uv copies / uv hard links (the price of envs that own their files)", ""),
    ("build", "envsync_sync", "juv_venv", "build: `envsync sync` / `juv venv`", ""),
    ("build", "envsync_sync", "pip_bytecode", "build: `envsync sync` / pip (bytecode compiled)", ""),
    ("build", "envsync_sync", "pip_no_bytecode", "build: `envsync sync` / pip `--no-compile`", ""),
    ("build", "envsync_sync_pip", "pip_no_bytecode", "`envsync sync --backend pip` / pip `--no-compile`", ""),
    ("launch", "envsync_launch", "kernelgateway", "warm launch: `envsync launch` / `jupyter kernelgateway`", "< 1×"),
    ("launch", "envsync_launch", "juv_run", "warm launch: `envsync launch` / `juv run`", ""),
    ("launch", "envsync_launch", "marimo_sandbox", "warm launch: `envsync launch` / `marimo edit --sandbox`", ""),
]


def newest(folder: Path) -> Path:
    """The newest full run's results (a quick run only when there is no full one)."""
    runs = sorted(folder.glob("*.json"))
    full = [p for p in runs if not p.stem.endswith("-quick")]
    if not (full or runs):
        raise SystemExit(f"no results in {folder}: run `python -m benchmarks run` first")
    return (full or runs)[-1]


def rows_of(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(name, row["key"]): row for name, sc in result["scenarios"].items() for row in sc.get("rows", [])}


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio_lines(result: dict[str, Any]) -> list[str]:
    """The ratios of medians, each with the same ratio taken round by round (the sides of one
    round ran back to back), so that a goal met or missed by the machine's noise shows as such."""
    rows = rows_of(result)
    out = [
        "| ratio (medians) | value | round by round: median (min – max) | goal |",
        "|---|---:|---:|---|",
    ]
    for scenario, subject, peer, text, goal in RATIOS:
        a, b = rows.get((scenario, subject)), rows.get((scenario, peer))
        if a and b:
            value = a["median_s"] / b["median_s"]
            rounds = per_round(a, b)
            spread = f"{statistics.median(rounds):.2f}× ({min(rounds):.2f} – {max(rounds):.2f})" if rounds else ""
            met = ""
            if goal:
                limit = float(re.sub(r"[^0-9.]", "", goal))
                strict = goal.startswith("<") and "≤" not in goal
                met = " ✓" if (value < limit if strict else value <= limit) else " ✗"
                if rounds and min(rounds) <= limit < max(rounds):
                    met += ", rounds on both sides"
            out.append(f"| {text} | {value:.2f}× | {spread} | {goal}{met} |")
    return out


def per_round(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """`a`'s sample over `b`'s, round by round; empty when the two were not taken in the same rounds."""
    xs, ys = a.get("samples_s") or [], b.get("samples_s") or []
    if len(xs) != len(ys) or not xs or any(y <= 0 for y in ys):
        return []
    return [x / y for x, y in zip(xs, ys, strict=True)]


def scenario_lines(name: str, sc: dict[str, Any]) -> list[str]:
    anchor = sc.get("anchor")
    rows = {r["key"]: r for r in sc.get("rows", [])}
    base = rows.get(anchor) if anchor else None
    out = [f"## {sc['title']}", ""]
    for note in sc.get("notes", []):
        out += [note, ""]
    head = "| measure | median | min – max | n |" + (f" × `{anchor}` |" if base else "")
    out += [head, "|---|---:|---:|---:|" + ("---:|" if base else "")]
    for row in sc.get("rows", []):
        cells = f"| {row['label']} | {fmt(row['median_s'])} | {fmt(row['min_s'])} – {fmt(row['max_s'])} | {row['n']} |"
        if base:
            cells += f" {row['median_s'] / base['median_s']:.2f} |"
        out.append(cells)
    if sc.get("sizes"):
        out += ["", "| packages | lock in the notebook | notebook | first build |", "|---:|---:|---:|---:|"]
        out += [f"| {s['packages']} | {s['lock_bytes'] / 1000:.0f} KB | {s['notebook_bytes'] / 1000:.0f} KB "
                f"| {fmt(s['build_s'])} |" for s in sc["sizes"]]
    figures = {k: v for k, v in sc.get("figures", {}).items() if v is not None}
    if figures:
        out += ["", "Other figures of this run: " + ", ".join(
            f"{k.replace('_', ' ')} {v:.1f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
            for k, v in figures.items()) + "."]
    return [*out, "", f"Scenario time: {sc.get('took_s', 0):.0f} s.", ""]


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    tools = ", ".join(v if v.startswith(k) else f"{k} {v}" for k, v in m.get("tools", {}).items())
    return (f"{m['cores']} cores, {m['memory_gb']} GB, load average {m['load_average_at_start'][0]:.2f} at the start and "
            f"{m.get('load_average_at_end', ['?'])[0]} at the end; {m['platform']}; CPython {m['python']}; "
            f"{m['uv']}; Kernel Gateway {m['kernel_gateway']}; envsync {m['envsync']}"
            + (f"; {tools}" if tools else "") + (f". {m['note']}" if m.get("note") else "") + ".")


def markdown(result: dict[str, Any], source: Path) -> str:
    lines = [
        "# Performance",
        "",
        f"Generated by `python -m benchmarks report` from `benchmarks/results/{source.name}`; do not edit by hand.",
        f"Measured by `{result['command']}` on {result['started_utc']} ({result['took_s'] / 60:.0f} min), "
        f"{result['repetitions']} round(s) a scenario"
        + (" without a warm-up (a quick run: it checks the harness, its figures are not for comparing)"
           if result.get("quick") else " after a warm-up round")
        + ", sides alternating; medians, min – max.",
        "",
        f"Machine: {machine_line(result)}",
        "",
        "```",
        ".venv/bin/python -m pip install -e '.[bench]'",
        ".venv/bin/python -m benchmarks run            # about 40 minutes here; --quick checks the harness in under 3",
        ".venv/bin/python -m benchmarks report         # this file, performance.png and the README's table",
        "```",
        "",
        "## Ratios",
        "",
        *ratio_lines(result),
        "",
        "![medians by scenario](performance.png)",
        "",
    ]
    for name, sc in result["scenarios"].items():
        lines += scenario_lines(name, sc)
    lines += ["## Where envsync is slower, why, and what would close it", ""]
    lines += explain.slower(result, rows_of(result))
    return "\n".join(lines).rstrip("\n") + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [(n, sc) for n, sc in result["scenarios"].items() if sc.get("rows")]
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(9, 2.2 + 0.45 * sum(len(sc["rows"]) for _, sc in scenarios)),
                             squeeze=False)
    for ax, (name, sc) in zip(axes[:, 0], scenarios, strict=True):
        rows = sc["rows"]
        keys = [r["key"] for r in rows]
        med = [r["median_s"] for r in rows]
        err = [[r["median_s"] - r["min_s"] for r in rows], [r["max_s"] - r["median_s"] for r in rows]]
        colors = ["tab:gray" if k.startswith(PEER_PREFIXES) else "tab:blue" for k in keys]
        ax.barh(keys, med, xerr=err, color=colors)
        ax.invert_yaxis()
        ax.set_title(sc["title"], fontsize=9, loc="left")
        ax.set_xlabel("seconds (median, min – max)", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def readme_table(result: dict[str, Any]) -> list[str]:
    r = rows_of(result)

    def med(scenario: str, key: str) -> float | None:
        row = r.get((scenario, key))
        return row["median_s"] if row else None

    def ms(v: float | None) -> str:
        return fmt(v) if v is not None else "not measured"

    def x(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}×" if a is not None and b is not None else "?"

    def rounds(scenario: str, subject: str, peer: str) -> str:
        """The ratio round by round, where it tells more than the medians' ratio."""
        pairs = per_round(r.get((scenario, subject)) or {}, r.get((scenario, peer)) or {})
        return f" (round by round {min(pairs):.2f}-{max(pairs):.2f}×)" if pairs else ""

    help_, check, reuse = med("commands", "envsync_help"), med("commands", "envsync_check"), med("commands", "envsync_sync_reuse")
    build, copy, hard = med("build", "envsync_sync"), med("build", "uv_copy"), med("build", "uv_hardlink")
    offline = med("build", "uv_copy_offline")
    first, pip_first = med("kernels", "envsync_first"), med("kernels", "pip_first")
    launch, kg = med("launch", "envsync_launch"), med("launch", "kernelgateway")
    juv, marimo = med("launch", "juv_run"), med("launch", "marimo_sandbox")
    sizes = result["scenarios"].get("scaling", {}).get("sizes", [])
    lock_rows = [f"| lock embedded in the notebook, {s['packages']} packages, one platform | {s['lock_bytes'] / 1000:.0f} KB |"
                 for s in sizes[-1:]]
    return [
        "| | figure |",
        "|---|---|",
        f"| `envsync --help`, whole process | {ms(help_)} |",
        f"| `envsync check` / `envsync sync` on a built env, whole processes | {ms(check)} / {ms(reuse)} "
        f"({x(check, help_)} / {x(reuse, help_)} `--help`) |",
        f"| first build of the reference lock, warm cache | {ms(build)}: {x(build, copy)} raw uv with copies"
        f"{rounds('build', 'envsync_sync', 'uv_copy')}, {x(build, offline)} uv with copies from its cache alone "
        f"(`--offline`, as envsync asks first), {x(build, hard)} uv's hard links |",
        f"| first kernel of a new env, POST to the first execute reply | {ms(first)} (a new pip-made venv: {ms(pip_first)}; "
        f"{x(first, pip_first)}{rounds('kernels', 'envsync_first', 'pip_first')}) |",
        f"| warm `envsync launch` to the gateway answering `GET /api` | {ms(launch)} (`jupyter kernelgateway`: {ms(kg)}, "
        f"`juv run`: {ms(juv)}, `marimo edit --sandbox`: {ms(marimo)}) |",
        *lock_rows,
    ]


def update_readme(readme: Path, result: dict[str, Any], source: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    start = text.find(README_SECTION)
    if start < 0:
        return
    table_start = text.find("\n|", start) + 1
    table_end = text.find("\n\n", table_start)
    intro = (f"{README_SECTION}\n\nMedians of one run of `python -m benchmarks run` "
             f"({result['date']}, {result['machine']['cores']} cores; `benchmarks/results/{source.name}`):\n\n")
    updated = text[:start] + intro + "\n".join(readme_table(result)) + text[table_end:]
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(updated, encoding="utf-8")
    os.replace(tmp, readme)


def main(source: Path, docs: Path, readme: Path) -> int:
    result = json.loads(source.read_text(encoding="utf-8"))
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "performance.md").write_text(markdown(result, source), encoding="utf-8")
    plot(result, docs / "performance.png")
    if readme.exists():
        update_readme(readme, result, source)
    print(f"wrote {docs / 'performance.md'}, {docs / 'performance.png'} and the table in {readme}")
    return 0
