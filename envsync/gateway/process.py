"""Kernel Gateway as a child process: start with readiness, stop, and ask it for its kernels.

The child is `python -m envsync.gateway.child --spec JSON` on envsync's own interpreter
(`envsync.gateway.spec.GatewaySpec`). It gets the token in its environment only (never
argv), an environment made of the pass-through names, and envsync's Jupyter data dir as
its only source of kernelspecs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from envsync import proc, tooloutput
from envsync.errors import GatewayError, UsageError
from envsync.gateway import rundir
from envsync.gateway.spec import SPEC_OPTION, TOKEN_ENV, GatewaySpec, check_token

CHILD_MODULE = "envsync.gateway.child"
_POLL = 0.02


@dataclass(frozen=True)
class RunningGateway:
    """A started gateway; `process` is None when rebuilt from the runtime registry."""

    pid: int
    port: int
    url: str  # http(s)://host:port, without the token
    token: str = field(repr=False)
    kernel_name: str = ""
    process: proc.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    log_path: Path | None = None
    # With the PID, names this one process: a later process given the same PID differs here.
    started: float | None = None
    runtime_dir: Path | None = None  # its kernels' connection files


def start(spec: GatewaySpec, *, token: str | None = None, ready_timeout: float = 30.0) -> RunningGateway:
    """Start the gateway and return once GET /api answers 200 with the token (None: a fresh one)."""
    spec.validate()
    if token is not None:
        check_token(token)
    data_dir = Path(spec.jupyter_data_dir).resolve()
    kernel_json = data_dir / "kernels" / spec.kernel_name / "kernel.json"
    if not kernel_json.is_file():
        raise GatewayError(f"kernelspec {spec.kernel_name} not found", hint=f"expected {kernel_json}")
    serve = spec.serve
    port = _claim_port(serve.ip, serve.port)
    token = token or _new_token()
    log_path = spec.log_path or data_dir / "runtime" / f"envsync-gateway-{port}.log"
    # Connection files (with each kernel's HMAC key) go in a folder of this gateway's own.
    runtime = rundir.fresh(rundir.for_port(data_dir, port))
    # The child gets absolute paths and the port claimed here: its working dir differs.
    resolved = replace(
        spec,
        jupyter_data_dir=data_dir,
        serve=replace(serve, port=port, certfile=_absolute(serve.certfile), keyfile=_absolute(serve.keyfile)),
        working_dir=Path(spec.working_dir or Path.cwd()).resolve(),
        log_path=log_path,
    )
    try:
        process = _spawn(resolved, token, log_path, runtime)
    except BaseException:
        rundir.remove(runtime)
        raise
    gw = RunningGateway(
        pid=process.pid,
        port=port,
        url=f"{serve.scheme}://{_url_host(serve.ip)}:{port}",
        token=token,
        kernel_name=spec.kernel_name,
        process=process,
        log_path=log_path,
        started=proc.start_time(process.pid),
        runtime_dir=runtime,
    )
    try:
        _wait_ready(gw, serve.ip, time.monotonic() + ready_timeout)
    except BaseException:
        proc.shutdown(process, interrupt_timeout=2.0, terminate_timeout=2.0)
        rundir.remove(runtime)
        raise
    return gw


def stop(gw: RunningGateway, timeout: float = 15.0) -> int | None:
    """Stop the gateway by PID (SIGINT, SIGTERM, SIGKILL) and make sure its kernels are gone."""
    if gw.process is None:
        stop_pid(gw.pid, timeout=timeout)
        return None
    kernel_pids = proc.descendants(gw.pid)
    returncode = proc.shutdown(gw.process, **_deadlines(timeout))
    try:
        _end_kernels(kernel_pids)
    finally:
        # A gateway that died hard left its kernels' connection files behind.
        if gw.runtime_dir is not None:
            rundir.remove(gw.runtime_dir)
    return returncode


def stop_pid(pid: int, *, timeout: float = 15.0) -> None:
    """Stop a gateway we did not start ourselves (from the runtime registry) and its kernels."""
    kernel_pids = proc.descendants(pid)
    if not proc.shutdown_pid(pid, **_deadlines(timeout)):
        raise GatewayError(f"gateway {pid} is still running after SIGKILL")
    _end_kernels(kernel_pids)


def kernels(gw: RunningGateway, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The gateway's running kernels (GET /api/kernels), for a status panel."""
    status, body = _get(gw.url, gw.token, "/api/kernels", timeout)
    if status != 200:
        raise GatewayError(f"gateway at {gw.url} answered {status} to GET /api/kernels")
    result = json.loads(body)
    if not isinstance(result, list):
        raise GatewayError(f"gateway at {gw.url} sent an unexpected kernel list")
    return result


def log_tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of the gateway's log (where it explains why it stopped)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- internals ---------------------------------------------------------------------------


def _deadlines(timeout: float) -> dict[str, float]:
    # Most of the time goes to SIGINT: that is when the gateway shuts its kernels down.
    return {
        "interrupt_timeout": max(1.0, timeout - 4.0),
        "terminate_timeout": 2.0,
        "kill_timeout": 2.0,
    }


def _end_kernels(pids: Iterable[int], timeout: float = 5.0) -> None:
    """Wait for kernel PIDs to go; SIGKILL any left; raise if one survives."""
    pending = [p for p in pids if proc.pid_alive(p)]
    deadline = time.monotonic() + timeout
    killed = False
    while pending:
        if time.monotonic() > deadline:
            if killed:
                raise GatewayError(f"kernel processes still running: {pending}")
            # ipykernel notices a lost parent within about a second; past the deadline, force it.
            for pid in pending:
                proc.signal_pid(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 3.0
        time.sleep(_POLL)
        pending = [p for p in pending if proc.pid_alive(p)]


def _claim_port(ip: str, port: int) -> int:
    """`port` if it can be bound on `ip` now, or a free one when `port` is 0."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            ip, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {ip}: {exc.strerror}") from exc
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # The same option tornado sets, so a port in TIME_WAIT counts as free, as it will be.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise GatewayError(
                    f"port {port} is already in use",
                    hint="choose another port, or stop what is running there",
                ) from exc
            raise GatewayError(f"cannot listen on {ip} port {port}: {exc.strerror}") from exc
        return int(sock.getsockname()[1])


def _child_env(spec: GatewaySpec, token: str, runtime: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in spec.serve.env_passthrough if k in os.environ}
    data_dir = spec.jupyter_data_dir
    env.update(
        {
            # Everything Jupyter reads or writes stays in envsync's data dir.
            "JUPYTER_DATA_DIR": str(data_dir),
            "JUPYTER_PATH": str(data_dir),
            "JUPYTER_CONFIG_DIR": str(data_dir / "config"),
            "JUPYTER_RUNTIME_DIR": str(runtime),
            TOKEN_ENV: token,
        }
    )
    return env


def _spawn(spec: GatewaySpec, token: str, log_path: Path, runtime: Path) -> proc.Popen[bytes]:
    # The spec goes on argv: it holds nothing secret, needs no pipe kept open for the
    # child's life, and lets `registry` tell from a PID's command line which gateway it
    # is. The token alone goes through the environment, which `ps` does not show.
    argv = [sys.executable, "-m", CHILD_MODULE, SPEC_OPTION, spec.to_json()]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Read and write: the child keeps the newest part of it when it reaches its cap.
    fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # `python -m` puts the working directory first on sys.path: run from the directory
        # that holds the envsync package, so the child imports this very envsync.
        return proc.spawn(
            argv,
            env=_child_env(spec, token, runtime),
            cwd=Path(__file__).resolve().parents[2],
            stdout=fd,
            stderr=proc.STDOUT,
            # A killed `envsync launch` must not leave a gateway serving code; SIGTERM lets
            # the gateway shut its kernels down on the way out.
            parent_death_signal=signal.SIGTERM,
        )
    finally:
        os.close(fd)


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(path).resolve()


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _connect_host(ip: str) -> str:
    """Where to reach a server bound to `ip` from this machine."""
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - mapped away
    return wildcard.get(ip, ip)


def _wait_ready(gw: RunningGateway, ip: str, deadline: float) -> None:
    """Poll until the child listens, then confirm GET /api with the token answers 200."""
    assert gw.process is not None
    host = _connect_host(ip)
    while True:
        returncode = gw.process.poll()
        if returncode is not None:
            tail = log_tail(gw.log_path)
            raise GatewayError(
                f"the gateway exited (code {returncode}) before it was ready: {tooloutput.last_line(tail)}",
                hint=f"full log: {gw.log_path}",
                detail=tail,
            )
        if time.monotonic() > deadline:
            raise GatewayError(
                "the gateway did not answer in time",
                hint=f"full log: {gw.log_path}",
                detail=log_tail(gw.log_path),
            )
        # A bare TCP connect first: a token-less HTTP probe would put a 401 in the log.
        try:
            with socket.create_connection((host, gw.port), timeout=0.2):
                pass
        except OSError:
            time.sleep(_POLL)
            continue
        try:
            status, _ = _get(gw.url, gw.token, "/api", max(0.5, deadline - time.monotonic()))
        except OSError:
            time.sleep(_POLL)
            continue
        if status == 200:
            return
        raise GatewayError(f"the gateway answered {status} to GET /api with its own token")


def _get(url: str, token: str, path: str, timeout: float) -> tuple[int, bytes]:
    """GET `path` on the gateway with the token in the Authorization header."""
    import http.client

    parts = urlsplit(url)
    host = _connect_host(parts.hostname or "127.0.0.1")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        import ssl

        # Our own child on an address we chose; its certificate is often self-signed.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_port(ip: str, port: int) -> None:
    """Raise GatewayError now if `port` cannot be bound on `ip` (before any slow work)."""
    _claim_port(ip, port)


def _new_token() -> str:
    """A random token that never starts with '-', so it can be pasted after `--token`."""
    while True:
        token = secrets.token_urlsafe(32)
        if token.startswith("-"):
            continue
        with contextlib.suppress(UsageError):
            check_token(token)  # 43 random characters all but always pass
            return token
