"""Abuse of a running gateway, on loopback only and bounded in count and time: bodies it must
not buffer, connections it must not drown in, logs it must not grow without end, error
bodies and kernelspecs that must not show this machine's paths, kernel start parameters,
limits, a kernelspec rewritten under it, and processes kernels leave behind.

Every process a test starts is ended by its PID; the reliability suite's autouse fixture
then proves nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from envsync.gateway import process as gateway
from envsync.gateway.spec import GatewaySpec, ServeOptions
from tests.reliability.conftest import assert_one_clean_error, cli, record
from tests.support.gateway_client import auth, connect, execute, kernel_pid, start_kernel, write_spec
from tests.support.processes import alive, descendants, free_port, kill_pids
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

KERNEL = "envsync-abuse"
FINGERPRINT = "sha256:abuse"
MAX_KERNELS = 3
LOG_CAP = 128 * 1024
MB = 1 << 20


def stop(gw: gateway.RunningGateway) -> None:
    kids = descendants(gw.pid)
    gateway.stop(gw)
    kill_pids([p for p in kids if alive(p)])


@contextlib.contextmanager
def serving(jupyter_dir: Path, **spec: Any) -> Iterator[gateway.RunningGateway]:
    serve = ServeOptions(max_kernels=spec.pop("max_kernels", MAX_KERNELS))
    gw = gateway.start(
        GatewaySpec(KERNEL, jupyter_dir, serve, working_dir=spec.pop("working_dir", jupyter_dir), **spec)
    )
    try:
        yield gw
    finally:
        stop(gw)


@pytest.fixture(scope="module")
def jupyter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("abuse-jupyter")
    write_spec(
        root,
        KERNEL,
        {"envsync": {"fingerprint": FINGERPRINT, "project": "abuse", "notebook": str(root / "nb.ipynb")}},
    )
    (root / "kernels" / KERNEL / "logo-64x64.png").write_bytes(b"\x89PNG\r\n\x1a\nlogo")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The notebook's folder, one level down, with a link that climbs when read as text."""
    top = tmp_path_factory.mktemp("abuse-work").resolve()
    root = top / "notebooks"
    (root / "deep" / "a").mkdir(parents=True)
    (root / "link").symlink_to(root / "deep" / "a")
    (top / "outside.ipynb").write_text("{}")
    return root


@pytest.fixture(scope="module")
def gw(jupyter_dir: Path, workdir: Path) -> Iterator[gateway.RunningGateway]:
    with serving(jupyter_dir, working_dir=workdir, log_max_bytes=LOG_CAP) as running:
        yield running


def raw(gw: gateway.RunningGateway, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on a fresh connection; what came back before the gateway closed it."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


# --- 4: resources used without the token ------------------------------------------------------


def test_200_mb_unauthenticated_post_is_refused_at_once_without_the_gateway_growing(
    gw: gateway.RunningGateway,
) -> None:
    child = psutil.Process(gw.pid)
    before = child.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], child.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    head = (
        f"POST /api/kernels HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n" % MB + b"x" * MB + b"\r\n"
    sent, answer = 0, b""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(head)
            with contextlib.suppress(OSError):
                while sent < 200 * MB:
                    sock.sendall(chunk)
                    sent += MB
            with contextlib.suppress(OSError):
                answer = sock.recv(4096)
    finally:
        seconds = time.monotonic() - start
        done.set()
        sampler.join(timeout=5)
    grew_mb = (peak[0] - before) / MB
    record(
        "abuse.unauthenticated_200mb_post",
        {"sent_mb": sent // MB, "seconds": round(seconds, 2), "rss_growth_mb": round(grew_mb, 1)},
    )
    assert sent < 200 * MB, "the gateway read the whole 200 MB body"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 401")
    assert grew_mb < 5, f"the gateway grew by {grew_mb:.1f} MB"
    assert seconds < 5
    declared = raw(
        gw, f"POST /api/kernels HTTP/1.1\r\nHost: x\r\nContent-Length: {200 * MB}\r\n\r\n".encode()
    )
    assert declared.startswith(b"HTTP/1.1 401")


def test_an_authenticated_body_over_one_mib_is_refused(gw: gateway.RunningGateway) -> None:
    big = json.dumps({"name": KERNEL, "pad": "x" * (2 * MB)})
    with contextlib.suppress(requests.RequestException):  # or the connection just closes
        r = requests.post(f"{gw.url}/api/kernels", data=big, headers=auth(gw), timeout=10)
        assert r.status_code == 400
    assert gateway.kernels(gw) == []


def test_1200_half_sent_connections_do_not_keep_the_token_holder_out(jupyter_dir: Path) -> None:
    # Started with 1,024 open files allowed, as on many desktops: the gateway lifts it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip("the hard open-files limit is too low to hold 1,200 connections here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        cm = serving(jupyter_dir)
        gw = cm.__enter__()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(1200):
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            sock.sendall(b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
            held.append(sock)
        start = time.monotonic()
        r = requests.get(f"{gw.url}/api", headers=auth(gw), timeout=10)
        seconds = time.monotonic() - start
        record("abuse.get_api_with_1200_half_open_s", round(seconds, 3))
        assert r.status_code == 200 and seconds < 3
    finally:
        for sock in held:
            sock.close()
        cm.__exit__(None, None, None)


def test_a_flood_of_bad_requests_leaves_the_log_under_its_cap(gw: gateway.RunningGateway) -> None:
    assert gw.log_path is not None

    def bad(i: int) -> None:
        # Alike lines (one path) collapse into a count; differing ones (random paths) are rate-limited.
        path = "/api/kernels" if i % 2 else f"/x/{secrets.token_urlsafe(12)}"
        raw(gw, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(bad, range(3000)))
    time.sleep(1.1)
    bad(0)  # the first line of the next second says how many were dropped
    size = gw.log_path.stat().st_size
    text = gw.log_path.read_text(errors="replace")
    record("abuse.log_after_3000_bad_requests_bytes", size)
    assert size <= LOG_CAP
    assert text.count("401 GET /api/kernels ") < 20  # one line, then a count
    assert "more than 50 a second" in text
    assert requests.get(f"{gw.url}/api", headers=auth(gw), timeout=10).status_code == 200


# --- 5: token channels and strength ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "problem"),
    [("x", "too short"), ("a" * 40, "too easy"), ("abcdefghijabcdefghijabcdefghijabcd", "too easy")],
    ids=["one-character", "one-character-repeated", "letters-only"],
)
def test_launch_refuses_a_weak_token_in_one_line(
    token: str,
    problem: str,
    good_nb: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVSYNC_TOKEN", token)
    r = cli(capsys, "launch", good_nb)
    assert_one_clean_error(r, codes=2, text=problem)
    assert not (good_nb.parent / "home" / "envs").exists()  # refused before any build


# --- 7: error bodies and kernelspecs --------------------------------------------------------------


def test_a_500_says_what_and_gives_an_error_id_and_the_log_has_the_traceback(
    gw: gateway.RunningGateway,
) -> None:
    r = requests.post(f"{gw.url}/api/kernels", data="[1]", headers=auth(gw), timeout=10)
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"reason", "message", "error-id"}
    assert "Traceback" not in r.text and "/" not in r.text.replace("\\/", "")
    assert gw.log_path is not None
    log = gw.log_path.read_text(errors="replace")
    at = log.index(f"error {body['error-id']}")
    assert "Traceback" in log[at:]


def test_kernelspecs_reach_clients_without_argv_or_paths(
    gw: gateway.RunningGateway, jupyter_dir: Path
) -> None:
    listed = requests.get(f"{gw.url}/api/kernelspecs", headers=auth(gw), timeout=10)
    one = requests.get(f"{gw.url}/api/kernelspecs/{KERNEL}", headers=auth(gw), timeout=10)
    for text, model in ((listed.text, listed.json()["kernelspecs"][KERNEL]), (one.text, one.json())):
        assert str(jupyter_dir) not in text and sys.executable not in text
        spec = model["spec"]
        assert spec["argv"] == [] and spec["env"] == {}
        assert spec["metadata"]["envsync"] == {"fingerprint": FINGERPRINT, "project": "abuse"}
        assert spec["display_name"] == KERNEL and spec["language"] == "python"
        logo = model["resources"]["logo-64x64"]
        assert requests.get(f"{gw.url}{logo}", headers=auth(gw), timeout=10).status_code == 200
    kernel_json = requests.get(f"{gw.url}/kernelspecs/{KERNEL}/kernel.json", headers=auth(gw), timeout=10)
    assert kernel_json.status_code == 404 and sys.executable not in kernel_json.text


# --- 6: kernel start parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", ["x y", "../../k", "00000000-0000-0000-0000-000000000000"])
def test_a_client_chosen_kernel_id_is_refused(kernel_id: str, gw: gateway.RunningGateway) -> None:
    r = requests.post(f"{gw.url}/api/kernels", json={"kernel_id": kernel_id}, headers=auth(gw), timeout=30)
    assert r.status_code == 400 and "kernel_id" in r.json()["message"]
    assert gateway.kernels(gw) == []


def test_an_id_field_is_ignored_and_the_kernel_gets_a_uuid(gw: gateway.RunningGateway) -> None:
    kernel = start_kernel(gw, {"id": "../../k"})
    try:
        assert str(uuid.UUID(kernel["id"])) == kernel["id"]
    finally:
        requests.delete(f"{gw.url}/api/kernels/{kernel['id']}", headers=auth(gw), timeout=30)


def test_a_path_that_climbs_through_a_symlink_keeps_the_kernel_in_the_notebooks_folder(
    gw: gateway.RunningGateway, workdir: Path
) -> None:
    kernel = start_kernel(gw, {"path": "link/../../outside.ipynb"})
    try:
        assert Path(f"/proc/{kernel_pid(gw, kernel['id'])}/cwd").resolve() == workdir
    finally:
        requests.delete(f"{gw.url}/api/kernels/{kernel['id']}", headers=auth(gw), timeout=30)


# --- 12: limits and the runtime folder ------------------------------------------------------------


@pytest.mark.parametrize("burst", range(4))
def test_kernels_past_the_limit_are_refused_and_the_limit_is_reached(
    gw: gateway.RunningGateway, burst: int
) -> None:
    """Twice the limit asked at once: exactly the limit starts, every other answer is a 429.

    Repeated, because a kernel that is registered while its start is still finishing
    was once counted twice, so a burst sometimes started one kernel too few.
    """

    def post(_: int) -> requests.Response:
        return requests.post(f"{gw.url}/api/kernels", json={}, headers=auth(gw), timeout=60)

    with ThreadPoolExecutor(max_workers=2 * MAX_KERNELS) as pool:
        answers = list(pool.map(post, range(2 * MAX_KERNELS)))
    started = [r.json()["id"] for r in answers if r.status_code == 201]
    try:
        refused = [r for r in answers if r.status_code != 201]
        assert len(started) == MAX_KERNELS, [(r.status_code, r.text[:120]) for r in answers]
        assert len(gateway.kernels(gw)) == MAX_KERNELS
        assert all(
            r.status_code == 429 and f"at most {MAX_KERNELS} kernels" in r.json()["message"] for r in refused
        )
    finally:
        for kid in started:
            requests.delete(f"{gw.url}/api/kernels/{kid}", headers=auth(gw), timeout=30)


def test_connection_files_live_in_a_private_folder_that_a_hard_death_does_not_leave(
    jupyter_dir: Path,
) -> None:
    with serving(jupyter_dir) as gw:
        assert gw.runtime_dir is not None
        for folder in (gw.runtime_dir, gw.runtime_dir.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        start_kernel(gw)
        assert list(gw.runtime_dir.glob("kernel-*.json"))
        os.kill(gw.pid, signal.SIGKILL)
        assert gw.process is not None
        gw.process.wait(timeout=10)
    assert not gw.runtime_dir.exists()


# --- 2: the kernelspec is the env's at every start ---------------------------------------------------


def test_a_kernelspec_rewritten_under_the_gateway_starts_no_kernel(tmp_path: Path) -> None:
    write_spec(tmp_path, KERNEL, {"envsync": {"fingerprint": FINGERPRINT, "project": "abuse"}})
    kernel_json = tmp_path / "kernels" / KERNEL / "kernel.json"
    original = kernel_json.read_text()
    with serving(tmp_path, python=sys.executable, fingerprint=FINGERPRINT) as gw:
        for change in ("argv", "fingerprint"):
            spec = json.loads(original)
            if change == "argv":
                spec["argv"][0] = "/bin/sh"
            else:
                spec["metadata"]["envsync"]["fingerprint"] = "sha256:other"
            kernel_json.write_text(json.dumps(spec))
            r = requests.post(f"{gw.url}/api/kernels", json={}, headers=auth(gw), timeout=30)
            assert r.status_code == 409 and "envsync launch" in r.json()["message"], r.text
            assert gateway.kernels(gw) == [] and descendants(gw.pid) == []
        kernel_json.write_text(original)
        assert (
            requests.post(f"{gw.url}/api/kernels", json={}, headers=auth(gw), timeout=30).status_code == 201
        )


# --- 9: nothing a kernel started outlives the launch ----------------------------------------------------

SPAWN = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode()); time.sleep(300); os._exit(0)
    os._exit(0)
os.wait()
print(child.pid, int(os.read(r, 32)), os.getpid(), os.getsid(0))
"""


@pytest.mark.network
def test_processes_a_kernel_started_end_with_a_launch_whose_gateway_was_killed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVSYNC_") and k != "VIRTUAL_ENV"}
    env["ENVSYNC_HOME"] = str(tmp_path / "home")
    nb = tmp_path / "nb.ipynb"
    envsync = [sys.executable, "-m", "envsync"]
    init = subprocess.run(
        [*envsync, "init", str(nb), "--python", "3.11"], env=env, capture_output=True, text=True, timeout=600
    )
    assert init.returncode == 0, init.stderr
    launch = subprocess.Popen(
        [*envsync, "launch", str(nb), "--json", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    left: list[int] = []
    try:
        assert launch.stdout is not None
        info = json.loads(launch.stdout.readline())
        gw = gateway.RunningGateway(pid=info["pid"], port=0, url=info["url"], token=info["token"])
        kernel = start_kernel(gw)
        ws = connect(gw, kernel["id"])
        try:
            sleeper, daemon, kpid, ksid = map(int, execute(ws, SPAWN).split())
        finally:
            ws.close()
        left = [sleeper, daemon, kpid]
        assert ksid == kpid  # each kernel leads its own session
        assert alive(sleeper) and alive(daemon)
        runtime = Path(env["ENVSYNC_HOME"]) / "jupyter" / "runtime"
        assert list(runtime.glob("kernels-*/kernel-*.json"))
        start = time.monotonic()
        os.kill(info["pid"], signal.SIGKILL)
        launch.wait(timeout=20)
        assert wait_until(lambda: not any(alive(p) for p in left), timeout=5), [p for p in left if alive(p)]
        record("abuse.launch_after_gateway_sigkill_s", round(time.monotonic() - start, 2))
        assert launch.returncode == 1
        assert not list(runtime.glob("kernels-*"))
    finally:
        if launch.poll() is None:
            launch.send_signal(signal.SIGINT)
            launch.wait(timeout=30)
        kill_pids([p for p in left if alive(p)])
