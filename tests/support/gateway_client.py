"""A client of a running Kernel Gateway: kernelspecs, REST calls and the channels WebSocket.

`gw` is anything with the running gateway's `url`, `token` and `pid`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from tests.support.processes import children_of


def write_spec(data_dir: Path, name: str, metadata: dict[str, Any]) -> None:
    """A kernelspec `name` under `data_dir/kernels` that runs ipykernel on this interpreter."""
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
        "metadata": metadata,
    }
    (data_dir / "kernels" / name).mkdir(parents=True)
    (data_dir / "kernels" / name / "kernel.json").write_text(json.dumps(spec))


def auth(gw: Any) -> dict[str, str]:
    return {"Authorization": f"token {gw.token}"}


def start_kernel(gw: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST /api/kernels; the new kernel's model."""
    r = requests.post(f"{gw.url}/api/kernels", json=body or {}, headers=auth(gw), timeout=30)
    assert r.status_code == 201, r.text
    return dict(r.json())


def kernel_pid(gw: Any, kernel_id: str) -> int:
    """The kernel's PID: the gateway's child whose command line names its connection file."""
    for pid in children_of(gw.pid):
        with contextlib.suppress(OSError):
            if kernel_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise AssertionError(f"no process for kernel {kernel_id}")


def channels_url(gw: Any, kernel_id: str, token: str | None = None) -> str:
    ws = gw.url.replace("http", "ws", 1)
    return f"{ws}/api/kernels/{kernel_id}/channels?session_id=test&token={token or gw.token}"


def kernel_message(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """A Jupyter message on the shell channel, as a client sends it over the WebSocket."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "test",
            "session": "test",
            "version": "5.3",
            "date": datetime.now(UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": content,
    }


def execute_message(code: str) -> dict[str, Any]:
    return kernel_message(
        "execute_request", {"code": code, "silent": False, "store_history": False, "allow_stdin": False}
    )


def execute(ws: Any, code: str, timeout: float = 60.0) -> str:
    """Run `code` over the channels WebSocket; return what it printed on stdout."""
    frame = execute_message(code)
    msg_id = frame["header"]["msg_id"]
    ws.send(json.dumps(frame))
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise AssertionError(msg["content"]["evalue"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)
    raise AssertionError("no reply from the kernel in time")


def nudge(ws: Any, *, deadline: float = 30.0) -> None:
    """Ask kernel_info until both its reply (shell) and an iopub message arrive, as JupyterLab does.

    Right after a connection (above all to a restarted kernel) iopub may not be subscribed
    yet and its first messages are lost; a client that executes at once can wait forever
    for output (jupyter_client#593). JupyterLab nudges first; so do these tests.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        msg = kernel_message("kernel_info_request", {})
        ws.send(json.dumps(msg))
        got_reply = got_iopub = False
        stop = time.monotonic() + 0.5
        while time.monotonic() < stop and not (got_reply and got_iopub):
            ws.settimeout(max(0.01, stop - time.monotonic()))
            try:
                answer = json.loads(ws.recv())
            except Exception as exc:  # noqa: BLE001 - a timeout here only means: ask again
                if "timed out" not in str(exc).lower():
                    raise
                break
            if answer.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"]:
                got_iopub = got_iopub or answer.get("channel") == "iopub"
                got_reply = got_reply or answer.get("msg_type") == "kernel_info_reply"
        if got_reply and got_iopub:
            return
    raise AssertionError(f"the kernel did not answer kernel_info within {deadline:.0f} s")


def run_code(gw: Any, kernel_id: str, code: str) -> str:
    """Run `code` in a kernel over a WebSocket of its own; what it printed on stdout."""
    ws = connect(gw, kernel_id)
    try:
        return execute(ws, code)
    finally:
        ws.close()


def connect(gw: Any, kernel_id: str, *, origin: str | None = None, timeout: float = 30.0) -> Any:
    """A kernel WebSocket with the token in its query, nudged until the kernel answers."""
    import websocket

    url = (
        gw.url.replace("http", "ws", 1)
        + f"/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}&token={gw.token}"
    )
    ws = websocket.create_connection(url, origin=origin, timeout=timeout)
    try:
        nudge(ws)
    except BaseException:
        ws.close()
        raise
    return ws
