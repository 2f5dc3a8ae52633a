"""Kernel Gateway as a child process: configuration checks, start with readiness, stop.

The child is `python -m envsync.gateway.child` on envsync's own interpreter. It gets the
token in its environment only (never argv), an environment made of the pass-through
names, and envsync's Jupyter data dir as its only source of kernelspecs.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from envsync import proc
from envsync.errors import GatewayError, UsageError

# Kernels inherit the gateway's environment, so the gateway gets only these (plus what it
# needs itself); a kernel then sees exactly the names here that are set.
DEFAULT_ENV_PASSTHROUGH = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
)
TOKEN_ENV = "KG_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
_APP_MODULE = "envsync.gateway.child"
_POLL = 0.02
_KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The token travels as `?token=` on WebSocket URLs: keep it free of characters to escape.
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class GatewayConfig:
    """How to run the gateway for one kernelspec."""

    kernel_name: str
    jupyter_data_dir: Path  # holds kernels/<kernel_name>/kernel.json
    ip: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port here (KG logs port 0 when given --port 0)
    token: str | None = field(default=None, repr=False)  # None: a fresh random token
    allow_origin: str | None = None  # exact scheme://host[:port] of the web editor
    allow_insecure_origin: bool = False  # required for allow_origin="*"
    certfile: Path | None = None
    keyfile: Path | None = None
    env_passthrough: tuple[str, ...] = DEFAULT_ENV_PASSTHROUGH
    log_path: Path | None = None  # None: <jupyter_data_dir>/runtime/envsync-gateway-<port>.log
    working_dir: Path | None = None  # kernels' working directory; None: the current one


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


def is_loopback(ip: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if ip.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def normalize_origin(origin: str) -> str:
    """The form a browser sends in `Origin`: lower-case, no default port."""
    parts = urlsplit(origin)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme.lower()):
        return f"{parts.scheme.lower()}://{host}"
    return f"{parts.scheme.lower()}://{host}:{port}"


def _origin_problem(origin: str) -> str | None:
    """Why `origin` is not `scheme://host[:port]`, or None when it is."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        return "the scheme must be http or https"
    if not parts.hostname:
        return "it has no host"
    if parts.username is not None or parts.password is not None:
        return "it must not contain a user name or password"
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        return "it must not have a path, query or fragment (not even a trailing /)"
    if port == 0:
        return "port 0 is not a valid origin port"
    return None


def validate(config: GatewayConfig) -> None:
    """Refuse insecure or malformed settings with a one-line UsageError."""
    if not _KERNEL_NAME.match(config.kernel_name):
        raise UsageError(f"invalid kernel name {config.kernel_name!r}")
    if not 0 <= config.port <= 65535:
        raise UsageError(f"port {config.port} is out of range (0-65535)")
    if config.token is not None and not _TOKEN.match(config.token):
        raise UsageError("the token may contain only letters, digits and . _ ~ -")
    origin = config.allow_origin
    if origin == "*":
        if not config.allow_insecure_origin:
            raise UsageError(
                "allow_origin '*' lets any web page use this gateway; "
                "name the editor's origin, or pass the insecure-origin flag",
            )
    elif origin is not None:
        problem = _origin_problem(origin)
        if problem:
            raise UsageError(f"origin {origin!r} is not scheme://host[:port]: {problem}")
    if (config.certfile is None) != (config.keyfile is None):
        raise UsageError("TLS needs both a certificate file and a key file")
    for label, path in (("certificate", config.certfile), ("key", config.keyfile)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"TLS {label} file not found: {path}")
    if not is_loopback(config.ip) and config.certfile is None:
        raise UsageError(
            f"binding to {config.ip} (not loopback) requires TLS: give a certificate and a key",
        )
    for name in config.env_passthrough:
        if not _ENV_NAME.match(name):
            raise UsageError(f"invalid environment variable name {name!r}")
        if name.startswith("KG_") or name.startswith("JUPYTER_"):
            raise UsageError(f"{name} configures the gateway itself and cannot be passed through")


def start(config: GatewayConfig, *, ready_timeout: float = 30.0) -> RunningGateway:
    """Start the gateway and return once GET /api answers 200 with the token."""
    validate(config)
    data_dir = Path(config.jupyter_data_dir).resolve()
    spec = data_dir / "kernels" / config.kernel_name / "kernel.json"
    if not spec.is_file():
        raise GatewayError(f"kernelspec {config.kernel_name} not found", hint=f"expected {spec}")
    port = _claim_port(config.ip, config.port)
    token = config.token or _new_token()
    log_path = config.log_path or data_dir / "runtime" / f"envsync-gateway-{port}.log"
    process = _spawn(config, data_dir, port, token, log_path)
    scheme = "https" if config.certfile else "http"
    gw = RunningGateway(
        pid=process.pid,
        port=port,
        url=f"{scheme}://{_url_host(config.ip)}:{port}",
        token=token,
        kernel_name=config.kernel_name,
        process=process,
        log_path=log_path,
    )
    try:
        _wait_ready(gw, config.ip, time.monotonic() + ready_timeout)
    except BaseException:
        proc.shutdown(process, interrupt_timeout=2.0, terminate_timeout=2.0)
        raise
    return gw


def stop(gw: RunningGateway, timeout: float = 15.0) -> int | None:
    """Stop the gateway by PID (SIGINT, SIGTERM, SIGKILL) and make sure its kernels are gone."""
    if gw.process is None:
        stop_pid(gw.pid, timeout=timeout)
        return None
    kernel_pids = proc.child_pids(gw.pid)
    returncode = proc.shutdown(gw.process, **_deadlines(timeout))
    _end_kernels(kernel_pids)
    return returncode


def stop_pid(pid: int, *, timeout: float = 15.0) -> None:
    """Stop a gateway we did not start ourselves (from the runtime registry) and its kernels."""
    kernel_pids = proc.child_pids(pid)
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


def _child_env(config: GatewayConfig, data_dir: Path, token: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in config.env_passthrough if k in os.environ}
    env.update(
        {
            # Everything Jupyter reads or writes stays in envsync's data dir.
            "JUPYTER_DATA_DIR": str(data_dir),
            "JUPYTER_PATH": str(data_dir),
            "JUPYTER_CONFIG_DIR": str(data_dir / "config"),
            "JUPYTER_RUNTIME_DIR": str(data_dir / "runtime"),
            TOKEN_ENV: token,
        }
    )
    return env


def _spawn(config: GatewayConfig, data_dir: Path, port: int, token: str, log_path: Path) -> proc.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        _APP_MODULE,
        "--kernel-name",
        config.kernel_name,
        "--jupyter-data-dir",
        str(data_dir),
        "--ip",
        config.ip,
        "--port",
        str(port),
        "--env-passthrough",
        ",".join(config.env_passthrough),
        "--root-dir",
        str(Path(config.working_dir or Path.cwd()).resolve()),
    ]
    if config.allow_origin:
        origin = config.allow_origin
        argv += ["--allow-origin", origin if origin == "*" else normalize_origin(origin)]
    if config.allow_insecure_origin:
        argv.append("--allow-insecure-origin")
    if is_loopback(config.ip):
        argv.append("--loopback")
    if config.certfile and config.keyfile:
        argv += ["--certfile", str(Path(config.certfile).resolve())]
        argv += ["--keyfile", str(Path(config.keyfile).resolve())]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # `python -m` puts the working directory first on sys.path: run from the directory
        # that holds the envsync package, so the child imports this very envsync.
        return proc.spawn(
            argv,
            env=_child_env(config, data_dir, token),
            cwd=Path(__file__).resolve().parents[2],
            stdout=fd,
            stderr=proc.STDOUT,
            # A killed `envsync launch` must not leave a gateway serving code; SIGTERM lets
            # the gateway shut its kernels down on the way out.
            parent_death_signal=signal.SIGTERM,
        )
    finally:
        os.close(fd)


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
                f"the gateway exited (code {returncode}) before it was ready: {proc.last_line(tail)}",
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
        if not token.startswith("-"):
            return token
