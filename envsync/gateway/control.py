"""The line between the gateway child and `envsync launch`: one JSON request, one JSON answer.

The child serves HTTP but owns nothing: the terminal, the notebook file, the env store
and the sync belong to the launch process. So the child's `/api/envsync*` handlers and its
kernel starts ask the launch process over a Unix socket. The socket lives in a folder of
its own that only this user can enter (0700, made by `mkdtemp`), the socket itself is
0600, and the server checks that the peer runs as this user. Short paths under TMPDIR keep
within the 107 bytes a socket path may have, wherever envsync's data dir is.

Each connection carries one request: the client sends a JSON object and shuts down its
write side; the server answers `{"status": int, "body": object}` and closes. Every read
and write has a deadline, and the server ends with `close()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envsync.errors import GatewayError

SOCKET_NAME = "control.sock"
MAX_MESSAGE = 4 << 20  # a manifest is capped at 1 MiB by the gateway; room for its JSON wrapping
READ_TIMEOUT = 10.0  # for the request to arrive whole, once connected
_ACCEPT_POLL = 0.25

Handler = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def _read_all(conn: socket.socket, deadline_s: float) -> bytes:
    conn.settimeout(deadline_s)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise ValueError("message too large")
        chunks.append(chunk)


def _same_user(conn: socket.socket) -> bool:
    """True when the peer runs as this user (Linux tells through SO_PEERCRED; elsewhere the 0700 folder decides)."""
    if not sys.platform.startswith("linux"):
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.geteuid())


class ControlServer:
    """Answers requests on a Unix socket with `handle`, each connection in a thread of its own.

    One thread per connection: a request that waits for the user's consent must not hold
    up a status request behind it.
    """

    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self.folder = Path(tempfile.mkdtemp(prefix="envsync-ctl-"))  # 0700 by construction
        self.path = self.folder / SOCKET_NAME
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._sock.listen(16)
        self._sock.settimeout(_ACCEPT_POLL)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="envsync-control", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed under us
            threading.Thread(target=self._serve, args=(conn,), name="envsync-control-request", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not _same_user(conn):
                    return
                request = json.loads(_read_all(conn, READ_TIMEOUT))
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError):
                status, body = 400, {"message": "malformed control request"}
            else:
                status, body = self._handle(request)
            with contextlib.suppress(OSError):
                conn.settimeout(READ_TIMEOUT)
                conn.sendall(json.dumps({"status": status, "body": body}).encode())

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, wait (up to `timeout`) for the accept thread, remove the socket's folder."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        self._thread.join(timeout)
        shutil.rmtree(self.folder, ignore_errors=True)


def ask(path: Path, request: dict[str, Any], *, timeout: float) -> tuple[int, dict[str, Any]]:
    """Send `request` to the control server at `path`; its (status, body). GatewayError when unreachable."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(min(timeout, READ_TIMEOUT))
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            answer = json.loads(_read_all(sock, timeout))
    except (OSError, ValueError) as exc:
        raise GatewayError(f"envsync launch did not answer: {exc}") from None
    status, body = answer.get("status"), answer.get("body")
    if not isinstance(status, int) or not isinstance(body, dict):
        raise GatewayError("envsync launch sent a malformed answer")
    return status, body
