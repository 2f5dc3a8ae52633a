"""Load, on loopback and bounded: 20 kernels started and stopped through one gateway, in
batches sized for a 2-core machine, and 2,000 execute requests over their WebSockets with
every reply accounted for. Nothing may be left running afterwards.

Run it alone with `.venv/bin/python -m pytest tests/reliability -m load -v`.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from envsync.gateway import process as gateway
from envsync.gateway.spec import GatewaySpec
from tests.reliability.conftest import record
from tests.support.gateway_client import auth, connect, execute_message, kernel_pid, write_spec
from tests.support.processes import alive, descendants
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.load,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

KERNEL = "envsync-load"
KERNELS = 20
BATCH = 5  # kernels alive at once: ipykernel's start-up is CPU-bound and this machine has 2 cores
EXECUTES_PER_KERNEL = 100  # 20 x 100 = 2,000
WINDOW = 25  # requests in flight per WebSocket
DEADLINE = 120.0  # for one batch's executes


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    not_ok: list[str] = field(default_factory=list)
    right_output: int = 0
    seconds: float = 0.0


def drive(ws: Any) -> Tally:
    """Send EXECUTES_PER_KERNEL requests, WINDOW at a time; match every execute_reply to its request."""
    tally = Tally()
    expected: dict[str, str] = {}  # msg_id -> the output it must print
    replied: set[str] = set()
    idle: set[str] = set()  # iopub's last word on a request: its output has all arrived
    printed: dict[str, str] = {}
    start = time.monotonic()
    try:
        deadline = start + DEADLINE
        i = 0
        while len(replied) < EXECUTES_PER_KERNEL or len(idle) < len(replied):
            while i < EXECUTES_PER_KERNEL and tally.sent - len(replied) < WINDOW:
                msg = execute_message(f"print({i} * {i})")
                msg_id, text = msg["header"]["msg_id"], json.dumps(msg)
                expected[msg_id] = f"{i * i}\n"
                ws.send(text)
                tally.sent += 1
                i += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ws.settimeout(remaining)
            msg = json.loads(ws.recv())
            parent = msg.get("parent_header", {}).get("msg_id")
            if parent not in expected:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
            elif msg["msg_type"] == "stream":
                printed[parent] = printed.get(parent, "") + msg["content"]["text"]
            elif msg["msg_type"] == "execute_reply":
                replied.add(parent)
                if msg["content"].get("status") == "ok":
                    tally.ok += 1
                else:
                    tally.not_ok.append(str(msg["content"].get("evalue") or msg["content"].get("status")))
    finally:
        ws.close()
    tally.right_output = sum(1 for m, out in expected.items() if printed.get(m) == out)
    tally.seconds = time.monotonic() - start
    return tally


@pytest.fixture
def jupyter_dir(tmp_path: Path) -> Path:
    root = tmp_path / "jupyter"
    write_spec(root, KERNEL, {"envsync": {"fingerprint": "sha256:load", "project": "load"}})
    return root


@pytest.mark.timeout(300)
def test_twenty_kernels_and_two_thousand_executes_through_one_gateway_every_reply_accounted_for(
    jupyter_dir: Path,
) -> None:
    started_at = time.monotonic()
    gw = gateway.start(GatewaySpec(KERNEL, jupyter_dir, working_dir=jupyter_dir))
    every_kernel_pid: list[int] = []
    tallies: list[Tally] = []
    start_latency: list[float] = []
    stop_latency: list[float] = []
    lock = threading.Lock()
    try:

        def start_one(_n: int) -> tuple[str, int, Any]:
            """POST a kernel and connect to it: timed until the kernel answers kernel_info."""
            t0 = time.monotonic()
            r = requests.post(f"{gw.url}/api/kernels", headers=auth(gw), json={}, timeout=60)
            assert r.status_code == 201, r.text
            kid = r.json()["id"]
            pid = kernel_pid(gw, kid)
            ws = connect(gw, kid)
            with lock:
                start_latency.append(time.monotonic() - t0)
            return kid, pid, ws

        def stop_one(kid: str) -> None:
            t0 = time.monotonic()
            r = requests.delete(f"{gw.url}/api/kernels/{kid}", headers=auth(gw), timeout=60)
            assert r.status_code == 204, r.text
            with lock:
                stop_latency.append(time.monotonic() - t0)

        with ThreadPoolExecutor(max_workers=BATCH) as pool:
            for _batch in range(KERNELS // BATCH):
                started = list(pool.map(start_one, range(BATCH)))
                pids = [pid for _kid, pid, _ws in started]
                every_kernel_pid += pids
                assert len(set(pids)) == BATCH
                tallies += list(pool.map(lambda s: drive(s[2]), started))
                list(pool.map(stop_one, [kid for kid, _pid, _ws in started]))
                assert wait_until(lambda pids=pids: not any(alive(p) for p in pids), timeout=15)
                assert gateway.kernels(gw) == []
    finally:
        left = descendants(gw.pid)
        gateway.stop(gw)
    assert not alive(gw.pid)
    assert not [p for p in [*every_kernel_pid, *left] if alive(p)]
    seconds = time.monotonic() - started_at

    sent = sum(t.sent for t in tallies)
    ok = sum(t.ok for t in tallies)
    not_ok = [e for t in tallies for e in t.not_ok]
    right = sum(t.right_output for t in tallies)
    record(
        "load",
        {
            "kernels_started_and_stopped": len(every_kernel_pid),
            "batch": BATCH,
            "execute_requests": sent,
            "execute_reply_ok": ok,
            "execute_reply_not_ok": len(not_ok),
            "outputs_correct": right,
            "kernel_start_to_first_answer_s_median": round(statistics.median(start_latency), 2),
            "kernel_start_to_first_answer_s_max": round(max(start_latency), 2),
            "kernel_stop_s_max": round(max(stop_latency), 2),
            "executes_per_s_per_batch": round(
                sum(
                    EXECUTES_PER_KERNEL * BATCH / max(t.seconds for t in tallies[i : i + BATCH])
                    for i in range(0, len(tallies), BATCH)
                )
                / (len(tallies) // BATCH),
                1,
            ),
            "total_seconds": round(seconds, 1),
            "processes_left": 0,
        },
    )
    assert len(every_kernel_pid) == KERNELS and len(set(every_kernel_pid)) == KERNELS
    assert sent == KERNELS * EXECUTES_PER_KERNEL == 2000
    assert not_ok == [] and ok == sent
    assert right == sent
