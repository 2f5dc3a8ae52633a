"""The gateway child's front door: the token is checked before a request body is read.

Imported only in the child (it pulls in tornado). `TokenCheck` is the one rule for who
may do what: the token only in `Authorization: token …`, or in `?token=` on the kernel
channels route (browsers cannot set headers on a WebSocket), compared in constant time;
without it, only a bare CORS preflight and Kernel Gateway's packaged API description,
neither with a body. `GuardedHTTPServer` applies it as soon as the headers are in, before
any body is read; caps the body, the time to send headers and the body, and the number
of open connections (the oldest that has not sent a request with the token goes first).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer

MAX_BODY_BYTES = 1 << 20  # kernel API bodies are a few hundred bytes
HEADER_TIMEOUT = 20.0  # to send a request's headers, and how long a kept-alive connection idles
BODY_TIMEOUT = 30.0
CHANNELS = re.compile(r"/api/kernels/\w+-\w+-\w+-\w+-\w+/channels")
OPEN_PATHS = frozenset({"/api/swagger.json", "/api/swagger.yaml"})
_OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SCHEME = re.compile(r"token[ \t]+(\S+)[ \t]*", re.IGNORECASE)
_log = logging.getLogger("tornado.access")


def connection_cap(open_files: int) -> int:
    """Connections served at once: half the open-files limit leaves room for kernels' sockets."""
    return max(64, min(4096, open_files // 2))


def _has_body(headers: httputil.HTTPHeaders) -> bool:
    return headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in headers


def is_preflight(method: str, headers: httputil.HTTPHeaders) -> bool:
    """A bare CORS preflight: browsers never send credentials on one."""
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def supplied_token(path: str, query: str, headers: httputil.HTTPHeaders) -> str | None:
    """The token where it may be: the Authorization header, or the channels route's query."""
    found = _SCHEME.fullmatch(headers.get("Authorization", ""))
    if found:
        return found.group(1)
    if CHANNELS.fullmatch(path):
        values = parse_qs(query, keep_blank_values=True).get("token", [])
        return values[0] if len(values) == 1 else None
    return None


class TokenCheck:
    """Who may do what, decided from the request line and headers alone."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()

    def matches(self, supplied: str | None) -> bool:
        """Constant-time: equal-length digests, so neither length nor prefix shows in the timing."""
        candidate = hashlib.sha256((supplied or "").encode("utf-8", "replace")).digest()
        return hmac.compare_digest(candidate, self._digest) and bool(supplied)

    def allows(self, method: str, uri: str, headers: httputil.HTTPHeaders) -> bool:
        """True for a request with the token, or one of the few that need none (and carry no body)."""
        path, _, query = uri.partition("?")
        if not _has_body(headers) and (
            is_preflight(method, headers) or (path in OPEN_PATHS and method in _OPEN_METHODS)
        ):
            return True
        return self.matches(supplied_token(path, query, headers))


class _Gate(httputil.HTTPMessageDelegate):
    """Passes a request on once its headers show the token; otherwise answers 401 unread."""

    def __init__(
        self,
        server: GuardedHTTPServer,
        server_conn: HTTP1ServerConnection,
        conn: HTTP1Connection,
        inner: httputil.HTTPMessageDelegate,
    ) -> None:
        self._server, self._server_conn, self._conn, self._inner = server, server_conn, conn, inner
        self._refused = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        assert isinstance(start_line, httputil.RequestStartLine)
        if self._server.check.allows(start_line.method, start_line.path, headers):
            self._server.passed(self._server_conn)
            return self._inner.headers_received(start_line, headers)
        self._refused = True
        self._server.refuse(self._conn, start_line, headers)
        return None

    def data_received(self, chunk: bytes) -> Any:
        return None if self._refused else self._inner.data_received(chunk)

    def finish(self) -> None:
        if not self._refused:
            self._inner.finish()

    def on_connection_close(self) -> None:
        if not self._refused:
            self._inner.on_connection_close()


class GuardedHTTPServer(HTTPServer):
    """tornado's HTTPServer with the token checked at the headers and the connections capped."""

    def initialize(  # type: ignore[override]
        self,
        request_callback: Any,
        *,
        check: TokenCheck,
        cors_origin: str = "",
        max_connections: int = 1024,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_body_size", MAX_BODY_BYTES)
        kwargs.setdefault("idle_connection_timeout", HEADER_TIMEOUT)
        kwargs.setdefault("body_timeout", BODY_TIMEOUT)
        super().initialize(request_callback, **kwargs)
        self.check = check
        self.cors_origin = cors_origin
        self.max_connections = max_connections
        # Connections waiting for a request's headers, oldest first: the ones to let go.
        self._waiting: dict[HTTP1ServerConnection, None] = {}

    def handle_stream(self, stream: Any, address: tuple[Any, ...]) -> None:
        if len(self._connections) >= self.max_connections and not self._evict():
            stream.close()
            return
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Any:
        assert isinstance(server_conn, HTTP1ServerConnection) and isinstance(request_conn, HTTP1Connection)
        self._waiting.pop(server_conn, None)
        self._waiting[server_conn] = None
        return _Gate(self, server_conn, request_conn, super().start_request(server_conn, request_conn))

    def passed(self, server_conn: HTTP1ServerConnection) -> None:
        self._waiting.pop(server_conn, None)

    def on_close(self, server_conn: object) -> None:
        self._waiting.pop(server_conn, None)  # type: ignore[call-overload]
        super().on_close(server_conn)

    def _evict(self) -> bool:
        """Close the connection that has waited longest without sending a request; False if none."""
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        del self._waiting[oldest]
        oldest.stream.close()
        return True

    def refuse(
        self, conn: HTTP1Connection, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> None:
        """Answer 401 and close, without reading what the client may still be sending."""
        ip = getattr(conn.context, "remote_ip", "?")
        path = start_line.path.partition("?")[0]
        _log.warning("401 %s %s (%s): no valid token, body not read", start_line.method, path, ip)
        body = json.dumps({"reason": "Unauthorized", "message": "this gateway needs its token"}).encode()
        lines = [
            "HTTP/1.1 401 Unauthorized",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        origin = headers.get("Origin")
        if self.cors_origin and (self.cors_origin == "*" or origin == self.cors_origin):
            # Without it a browser reports a CORS failure instead of the 401.
            lines.append(f"Access-Control-Allow-Origin: {self.cors_origin}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if start_line.method == "HEAD" else body)
        stream = conn.detach()
        try:
            written = stream.write(raw)
        except Exception:  # noqa: BLE001 - the client is already gone
            stream.close()
            return

        def close(done: Any) -> None:
            if not done.cancelled():
                done.exception()  # a reset by the client is no error of ours
            stream.close()

        written.add_done_callback(close)
