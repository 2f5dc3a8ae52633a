"""POST a kernel, then the first execute reply: in a freshly built envsync env and in a pip-made venv.

envsync side: each round deletes the reference env and runs `envsync launch NB`, which
builds it (and starts compiling bytecode in the background), then POSTs a kernel as soon
as `GET /api` answers: that is the env's first kernel; a second kernel follows ("later").
pip side: a venv made by `python -m venv` + `pip install` (bytecode compiled at install),
fresh each round, served by a bare `jupyter kernelgateway`; its first and a later kernel.
Timed from the POST to the `execute_reply` of `1 + 1` on the kernel's WebSocket.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BIN,
    READY_TIMEOUT,
    child_env,
    free_port,
    log,
    new_token,
    stats,
    stop_tree,
    wait_http_200,
)
from benchmarks.context import Context, settle
from benchmarks.scenarios.build import pip_venv, uv_venv
from envsync import proc

REPLY_TIMEOUT = 180.0


def first_reply(port: int, token: str, name: str | None = None) -> float:
    """Seconds from POST /api/kernels to the reply of the first execute on the new kernel."""
    import websocket

    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REPLY_TIMEOUT)
    body = json.dumps({"name": name} if name else {})
    conn.request("POST", "/api/kernels", body=body, headers={"Authorization": f"token {token}",
                                                           "Content-Type": "application/json"})
    answer = conn.getresponse()
    model = json.loads(answer.read())
    conn.close()
    if answer.status not in (200, 201):
        raise RuntimeError(f"POST /api/kernels: {answer.status} {model}")
    url = f"ws://127.0.0.1:{port}/api/kernels/{model['id']}/channels?session_id={uuid.uuid4().hex}&token={token}"
    ws = websocket.create_connection(url, timeout=REPLY_TIMEOUT)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "bench", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": "1 + 1", "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("msg_type") == "execute_reply" and msg.get("parent_header", {}).get("msg_id") == msg_id:
                return time.perf_counter() - start
        raise RuntimeError("no execute_reply before the deadline")
    finally:
        ws.close()


def _envsync_round(ctx: Context, *, fresh: bool = True) -> tuple[float, float]:
    if fresh:
        ctx.delete_ref_envs()
    port, token = free_port(), new_token()
    child = proc.spawn([BIN / "envsync", "launch", ctx.ref.notebook, "--port", str(port), "--json"],
                       env=ctx.env(ENVSYNC_TOKEN=token), stdout=proc.DEVNULL, stderr=proc.DEVNULL)
    try:
        wait_http_200(port, "/api", token, child, time.monotonic() + 900)
        return first_reply(port, token), first_reply(port, token)
    finally:
        stop_tree(child)
        settle(ctx.home)


def _pip_round(ctx: Context, venv: Path) -> tuple[float, float]:
    """First and later kernel of `venv` behind a bare Kernel Gateway (its kernelspec kept outside the venv)."""
    data = ctx.work / "kg-data" / venv.name
    spec = data / "kernels" / "bench"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "bench", "language": "python"}))
    port, token = free_port(), new_token()
    env = child_env({"KG_AUTH_TOKEN": token, "JUPYTER_PATH": str(data), "JUPYTER_DATA_DIR": str(data)})
    child = proc.spawn([BIN / "jupyter", "kernelgateway", "--ip", "127.0.0.1", "--port", str(port)],
                       env=env, stdout=proc.DEVNULL, stderr=proc.DEVNULL)
    try:
        wait_http_200(port, "/api", token, child, time.monotonic() + READY_TIMEOUT)
        return first_reply(port, token, "bench"), first_reply(port, token, "bench")
    finally:
        stop_tree(child)


def run(ctx: Context) -> dict[str, Any]:
    log("kernels: POST to the first execute reply, first and later kernels")
    samples: dict[str, list[float]] = {k: [] for k in ("envsync_first", "envsync_later", "pip_first", "pip_later")}
    # Round 0 warms the page cache and both caches and is not counted (the quick run skips it).
    for i in range(1 if ctx.quick else 0, ctx.reps + 1):
        venv = ctx.work / "kernels" / f"pip-{i}"
        if ctx.quick:  # a quick check of the harness: uv compiles as pip does, in seconds
            uv_venv(ctx, venv, None, compile_bytecode=True)
        else:
            pip_venv(ctx, venv, compile_bytecode=True)  # built before either side is timed
        sides = [("envsync", lambda: _envsync_round(ctx)), ("pip", lambda venv=venv: _pip_round(ctx, venv))]
        for side, go in sides if i % 2 == 0 else reversed(sides):
            first, later = go()
            if i:
                samples[f"{side}_first"].append(first)
                samples[f"{side}_later"].append(later)
            log(f"  round {i}/{ctx.reps} {side}: first {first:.3f}s later {later:.3f}s")
        ctx.set_aside(venv)
    # A settled env (bytecode compiled, nothing in the background): envsync's gateway against a
    # bare Kernel Gateway serving the very same env, later kernels only.
    settle(ctx.home)
    env_python = ctx.ref_env() / "bin" / "python"
    for i in range(1 if ctx.quick else max(ctx.reps, 3)):
        samples.setdefault("envsync_settled", []).append(_envsync_round(ctx, fresh=False)[1])
        samples.setdefault("kernelgateway_same_env", []).append(_pip_round(ctx, env_python.parent.parent)[1])
        log(f"  settled {i + 1}: envsync {samples['envsync_settled'][-1]:.3f}s "
            f"bare {samples['kernelgateway_same_env'][-1]:.3f}s")
    labels = {
        "envsync_settled": "a later kernel of a settled envsync env, envsync's gateway",
        "kernelgateway_same_env": "a later kernel of the same env behind a bare `jupyter kernelgateway`",
        "envsync_first": "first kernel of a freshly built envsync env (`envsync launch`)",
        "envsync_later": "a later kernel of the same envsync env",
        "pip_first": "first kernel of a fresh pip-made venv (bare `jupyter kernelgateway`)"
        + (" (quick run: uv with --compile-bytecode)" if ctx.quick else ""),
        "pip_later": "a later kernel of the same pip-made venv",
    }
    return {
        "title": "POST kernel to the first execute reply",
        "anchor": "pip_first",
        "subject": "envsync_first",
        "rows": [stats(k, labels[k], v) for k, v in samples.items()],
        "notes": [__doc__.split("\n\n", 1)[1].strip()],
    }
