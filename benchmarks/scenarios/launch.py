"""Warm start to the first 200: envsync launch, bare Kernel Gateway (two forms), juv run, marimo edit --sandbox.

envsync and Kernel Gateway answer `GET /api` with the token; juv runs JupyterLab, polled
on the same `GET /api` with its token; marimo serves its editor, polled on `GET /` (run
with --no-token). The notebook kinds differ: envsync's and juv's are .ipynb files, marimo's
is a Python file; all three declare numpy, pandas, matplotlib and requests, and every
env (and uv's cache) is warm before timing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import reference
from benchmarks.common import BIN, Series, child_env, free_port, log, new_token, time_to_200
from benchmarks.context import Context


def _kernelspec_dir(ctx: Context, python: Path) -> Path:
    data = ctx.work / "kg-data"
    spec = data / "kernels" / "bench"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "bench", "language": "python"}))
    return data


def run(ctx: Context) -> dict[str, Any]:
    env_path = ctx.ref_env()
    kg_data = _kernelspec_dir(ctx, env_path / "bin" / "python")
    juv_nb = reference.juv_notebook(ctx.work / "juv-launch.ipynb")
    marimo_nb = reference.marimo_script(ctx.work / "marimo_launch.py")
    juv, marimo = ctx.tool("juv"), ctx.tool("marimo")

    def envsync_launch() -> float:
        port, token = free_port(), new_token()
        return time_to_200([BIN / "envsync", "launch", ctx.ref.notebook, "--port", str(port), "--json"],
                           env=ctx.env(ENVSYNC_TOKEN=token), port=port, path="/api", token=token)

    def kernelgateway(*argv: str | Path) -> float:
        port, token = free_port(), new_token()
        env = child_env({"KG_AUTH_TOKEN": token, "JUPYTER_PATH": str(kg_data), "JUPYTER_DATA_DIR": str(kg_data)})
        return time_to_200([*argv, "--ip", "127.0.0.1", "--port", str(port)], env=env, port=port,
                           path="/api", token=token)

    def juv_run() -> float:
        port, token = free_port(), new_token()
        args = ["--no-browser", "--allow-root", "--ip", "127.0.0.1", "--port", str(port),
                f"--IdentityProvider.token={token}"]
        return time_to_200([juv, "run", juv_nb, "--", *args], env=child_env(), port=port, path="/api",
                           token=token, cwd=ctx.work)

    def marimo_edit() -> float:
        port = free_port()
        argv = [marimo, "edit", "--sandbox", "--headless", "--host", "127.0.0.1", "--port", str(port),
                "--no-token", "--skip-update-check", marimo_nb]
        return time_to_200(argv, env=child_env(), port=port, path="/", token=None, cwd=ctx.work)

    variants = {
        "envsync_launch": envsync_launch,
        "kernelgateway": lambda: kernelgateway(BIN / "jupyter", "kernelgateway"),
        "python_m_kernel_gateway": lambda: kernelgateway(sys.executable, "-m", "kernel_gateway"),
        "juv_run": juv_run,
        "marimo_sandbox": marimo_edit,
    }
    log("launch: warm start to the first 200")
    series = Series()
    series.alternate(variants, ctx.reps, warmup=not ctx.quick)
    return {
        "title": "Warm launch to the first 200",
        "anchor": "kernelgateway",
        "subject": "envsync_launch",
        "rows": [
            series.row("envsync_launch", "`envsync launch NB` (env built) to `GET /api` 200 with the token"),
            series.row("kernelgateway", "`jupyter kernelgateway` to `GET /api` 200 with the token"),
            series.row("python_m_kernel_gateway", "`python -m kernel_gateway` to `GET /api` 200 with the token"),
            series.row("juv_run", "`juv run NB` (JupyterLab) to `GET /api` 200 with the token"),
            series.row("marimo_sandbox", "`marimo edit --sandbox --headless` to `GET /` 200 (a .py notebook)"),
        ],
        "notes": [__doc__.split("\n\n", 1)[1].strip()],
    }
