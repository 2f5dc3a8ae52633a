"""`jupyter server --gateway-url` in front of the gateway of `envsync launch`: the example
notebook's code cells run through the server, as JupyterLab would run them.

How the cells are driven: the test is a client of the jupyter server's documented API only.
It creates a session (POST /api/sessions, as JupyterLab does when it opens a notebook), the
server asks the envsync gateway for the kernel (its GatewayClient sends the gateway token),
and the test opens the kernel's channels WebSocket on the *server* and sends one
execute_request per code cell (Jupyter messaging protocol, JSON frames). iopub replies become
notebook outputs through nbformat.v4.output_from_msg, the same conversion nbclient uses.

Why not nbclient itself: nbclient needs a jupyter_client kernel client. The only one that
speaks REST + WebSocket, jupyter_server's GatewayKernelClient, opens its WebSocket with no
Authorization header (so it cannot reach a server that requires a token) and its manager posts
kernel name "python3" whatever it is given; using it means patching jupyter_server internals.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
import websocket

pytestmark = [pytest.mark.network]

CELL_TIMEOUT = 60.0
READY_TIMEOUT = 60.0


# --- a minimal Jupyter protocol client over the server's channels WebSocket --------------


def _message(msg_type: str, content: dict[str, Any], session: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "e2e",
            "session": session,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


class Channels:
    """The kernel's channels WebSocket on the jupyter server (JSON frames, no subprotocol)."""

    def __init__(self, server_url: str, token: str, kernel_id: str, session_id: str) -> None:
        ws_url = server_url.replace("http://", "ws://", 1)
        self.session = session_id
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={session_id}",
            header=[f"Authorization: token {token}"],
            timeout=5,
        )

    def close(self) -> None:
        self.ws.close()

    def send(self, msg_type: str, content: dict[str, Any]) -> str:
        msg = _message(msg_type, content, self.session)
        self.ws.send(json.dumps(msg))
        return str(msg["header"]["msg_id"])

    def replies_to(self, msg_id: str, deadline: float) -> Iterator[dict[str, Any]]:
        """Messages whose parent is `msg_id`, until the deadline."""
        while time.monotonic() < deadline:
            try:
                frame = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if not isinstance(frame, str):
                continue  # binary frames carry buffers; nothing here sends or expects any
            msg = json.loads(frame)
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                yield msg
        raise AssertionError(f"no complete reply to {msg_id} before the deadline")

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """kernel_info_request until a reply comes (the kernel may still be starting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("kernel_info_request", {})
            try:
                for msg in self.replies_to(msg_id, min(deadline, time.monotonic() + 3)):
                    if msg["msg_type"] == "kernel_info_reply":
                        return dict(msg["content"])
            except AssertionError:
                continue
        raise AssertionError(f"the kernel did not answer kernel_info in {timeout} s")

    def execute(self, code: str, timeout: float) -> tuple[dict[str, Any], list[Any]]:
        """Run `code`; its execute_reply content and the notebook outputs it produced."""
        msg_id = self.send(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        outputs: list[Any] = []
        reply: dict[str, Any] | None = None
        idle = False
        for msg in self.replies_to(msg_id, time.monotonic() + timeout):
            kind = msg["msg_type"]
            if msg.get("channel") == "shell" and kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind in ("stream", "display_data", "execute_result", "error"):
                outputs.append(nbformat.v4.output_from_msg(msg))
            if reply is not None and idle:
                return reply, outputs
        raise AssertionError("unreachable")


def _text(outputs: list[Any]) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def test_notebook_runs_through_jupyter_server_gateway(launched, jupyter_server, quickstart_lock, artifacts):
    server = jupyter_server
    nb = nbformat.read(launched.notebook, as_version=4)
    kernel_name = nb.metadata.kernelspec.name
    assert kernel_name == quickstart_lock.kernel_name

    # The server lists the gateway's kernelspec, with envsync's fingerprint, as its own.
    specs = server.request("GET", "/api/kernelspecs").json()
    assert list(specs["kernelspecs"]) == [kernel_name]
    spec = specs["kernelspecs"][kernel_name]["spec"]
    assert spec["metadata"]["envsync"]["fingerprint"] == quickstart_lock.fingerprint

    shutil.copyfile(launched.notebook, server.root / "quickstart.ipynb")
    created = server.request(
        "POST",
        "/api/sessions",
        json={
            "path": "quickstart.ipynb",
            "name": "quickstart.ipynb",
            "type": "notebook",
            "kernel": {"name": kernel_name},
        },
    )
    assert created.status_code == 201, created.text
    session = created.json()
    kernel_id = session["kernel"]["id"]
    try:
        # The kernel lives on the envsync gateway, under the same id.
        assert [k["id"] for k in launched.kernels()] == [kernel_id]

        channels = Channels(server.url, server.token, kernel_id, session_id=uuid.uuid4().hex)
        try:
            info = channels.wait_ready(READY_TIMEOUT)
            assert info["language_info"]["name"] == "python"
            for count, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), start=1):
                reply, outputs = channels.execute(cell.source, CELL_TIMEOUT)
                assert reply["status"] == "ok", (cell.source, reply, outputs)
                cell.outputs = outputs
                cell.execution_count = reply.get("execution_count", count)
        finally:
            channels.close()
    finally:
        deleted = server.request("DELETE", f"/api/sessions/{session['id']}")
        assert deleted.status_code == 204, deleted.text

    # Deleting the session shut the kernel down on the gateway.
    assert launched.wait_no_kernels() == []

    nbformat.validate(nb)
    nbformat.write(nb, artifacts / "quickstart-via-jupyter-server.ipynb")

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    executable = Path(_text(code_cells[0].outputs).strip())
    assert executable.is_absolute(), code_cells[0].outputs
    assert executable.parent.parent.resolve().parent == launched.envs_dir.resolve(), executable
    numpy_out = _text(code_cells[1].outputs)
    assert f"numpy {quickstart_lock.numpy_version}\n" in numpy_out, numpy_out
    assert "[3 5 7]" in numpy_out
