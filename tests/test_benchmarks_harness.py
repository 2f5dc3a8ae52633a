"""The benchmark harness: a quick run of its offline scenario writes valid results, and the report is generated from them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from envsync import proc

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def harness(*args: str | Path, timeout: float = 240) -> proc.Result:
    env = proc.clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return proc.run([sys.executable, "-m", "benchmarks", *map(str, args)], cwd=ROOT, env=env, timeout=timeout,
                    check=False)


def row(key: str, median: float) -> dict[str, Any]:
    return {"key": key, "label": f"`{key}`", "median_s": median, "min_s": median * 0.9, "max_s": median * 1.2, "n": 5,
            "samples_s": [median] * 5}


def synthetic() -> dict[str, Any]:
    """Results of every scenario, with envsync slower than uv's hard links and faster than the rest."""
    return {
        "date": "2026-01-02", "started_utc": "2026-01-02T03:04:05Z", "quick": False, "repetitions": 5,
        "command": "python -m benchmarks run", "took_s": 600.0,
        "machine": {"cores": 2, "memory_gb": 8.0, "load_average_at_start": [0.5, 0.5, 0.5],
                    "load_average_at_end": [0.7, 0.6, 0.5], "platform": "Linux", "python": "3.11.7",
                    "uv": "uv 0.13.9", "kernel_gateway": "3.0.1", "envsync": "0.1", "note": "", "tools": {}},
        "scenarios": {
            "commands": {"title": "Short commands", "anchor": "envsync_help", "subject": "envsync_check",
                         "rows": [row("envsync_help", 0.06), row("envsync_check", 0.09),
                                  row("envsync_sync_reuse", 0.12), row("pip_freeze", 0.5), row("pip_check", 0.5)]},
            "build": {"title": "First build", "anchor": "uv_copy", "subject": "envsync_sync",
                      "rows": [{**row("envsync_sync", 5.0), "samples_s": [4.0, 4.8, 5.0, 5.5, 7.2]},
                               {**row("uv_copy", 4.5), "samples_s": [5.0, 4.5, 4.5, 4.5, 4.5]},
                               row("uv_hardlink", 1.0)],
                      "figures": {"uv_copy_own_mb": 260.0}},
            "kernels": {"title": "Kernels", "anchor": "pip_first", "subject": "envsync_first",
                        "rows": [row("envsync_first", 0.5), row("pip_first", 0.45)]},
        },
    }


def test_the_report_puts_ratios_first_marks_goals_and_explains_every_loss(tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    results.write_text(json.dumps(synthetic()))
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    out = harness("report", "--results", results, "--docs", tmp_path, "--readme", readme)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "performance.md").read_text()
    assert text.index("## Ratios") < text.index("## Short commands")
    assert "| `envsync check` / `envsync --help` | 1.50× | 1.50× (1.50 – 1.50) | ≤ 1.6× ✓ |" in text
    assert "| `envsync sync` (reuse) / `envsync --help` | 2.00× | 2.00× (2.00 – 2.00) | ≤ 1.6× ✗ |" in text
    # The medians meet the build goal, but round by round the ratio lands on both sides of it.
    assert (
        "| build: `envsync sync` / uv with copies (envsync's link mode) | 1.11× | 1.11× (0.80 – 1.60) "
        "| ≤ 1.15× ✓, rounds on both sides |"
    ) in text
    # Each envsync row a peer beats is named with its reason; a row that wins is not.
    losses = text.split("## Where envsync is slower, why, and what would close it")[1]
    assert "**`envsync_sync`** is 5.00× **`uv_hardlink`**" in losses
    assert "**`envsync_first`** is 1.11× **`pip_first`**" in losses
    assert "pip_freeze" not in losses
    assert (tmp_path / "performance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = readme.read_text().split("## Speed and reliability, measured")[1].split("\n## ")[0]
    assert "| `envsync --help`, whole process | 60 ms |" in table
    assert "benchmarks/results/r.json" in table
    # Everything outside the table is the README as it was.
    before, after = README.read_text().split("## Speed and reliability, measured")
    assert readme.read_text().startswith(before)
    assert readme.read_text().endswith(after[after.index("\n\n[") :])


@pytest.mark.slow
def test_a_quick_run_of_the_offline_scenario_writes_results_the_report_reads(tmp_path: Path) -> None:
    results = tmp_path / "quick.json"
    out = harness("run", "--quick", "--only", "scaling", "--output", results)
    assert out.returncode == 0, out.stderr
    data = json.loads(results.read_text())
    assert data["quick"] is True and data["machine"]["cores"] >= 1
    assert {"python", "uv", "kernel_gateway", "load_average_at_start"} <= set(data["machine"])
    scaling = data["scenarios"]["scaling"]
    assert [s["packages"] for s in scaling["sizes"]] == [10, 20]
    assert all(0 < r["min_s"] <= r["median_s"] <= r["max_s"] for r in scaling["rows"])
    assert scaling["sizes"][0]["lock_bytes"] < scaling["sizes"][1]["lock_bytes"]
    out = harness("report", "--results", results, "--docs", tmp_path, "--readme", tmp_path / "no-readme.md")
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "performance.md").read_text()
    assert "| 20 |" in text and "`envsync check NB`, 20 packages" in text
