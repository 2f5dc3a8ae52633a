"""What a gateway serves and how: one description shared by the parent and the child.

`ServeOptions` holds what can be checked before the kernel is known (address, port,
origin, TLS, environment names); `GatewaySpec` adds the kernel and where things live.
The child receives a `GatewaySpec` as one JSON document (`to_json` / `from_json`) and
runs the same `validate`. The token is never part of it: it travels only in the child's
environment, under `TOKEN_ENV`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from envsync import rules
from envsync.errors import UsageError

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
ANY_ORIGIN = "*"
# The child's one command-line option; its value is `GatewaySpec.to_json()`.
SPEC_OPTION = "--spec"
# The token travels as `?token=` on WebSocket URLs: keep it free of characters to escape.
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")
# A guessable token is no lock: the generated one has 43 characters from 64.
TOKEN_MIN_LENGTH = 32
TOKEN_MIN_DISTINCT = 10
_TOKEN_CLASSES = (str.islower, str.isupper, str.isdigit)
DEFAULT_MAX_KERNELS = 8
MAX_KERNELS_LIMIT = 256
# The gateway's log is compacted to its newest half once it reaches this size.
DEFAULT_LOG_MAX_BYTES = 8 << 20
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


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


def check_token(token: str) -> None:
    """Refuse a token that would need escaping in a URL, or one too weak to keep others out."""
    if _TOKEN.fullmatch(token) is None:
        raise UsageError("the token may contain only letters, digits and . _ ~ -")
    if len(token) < TOKEN_MIN_LENGTH:
        raise UsageError(
            f"the token is too short ({len(token)} characters): use at least {TOKEN_MIN_LENGTH}, "
            "or leave it out for a random one"
        )
    classes = sum(1 for is_class in _TOKEN_CLASSES if any(is_class(c) for c in token))
    classes += any(c in "._~-" for c in token)
    if len(set(token)) < TOKEN_MIN_DISTINCT or classes < 2:
        raise UsageError(
            f"the token is too easy to guess: use at least {TOKEN_MIN_DISTINCT} different characters "
            "of at least two kinds (letters, digits, . _ ~ -), or leave it out for a random one"
        )


@dataclass(frozen=True)
class ServeOptions:
    """How the gateway listens and whom it answers; known before any environment exists."""

    ip: str = "127.0.0.1"
    port: int = 0  # 0: a free port, claimed by `process.start`
    allow_origin: str | None = None  # exact scheme://host[:port] of the web editor
    allow_insecure_origin: bool = False  # required for allow_origin="*"
    certfile: Path | None = None
    keyfile: Path | None = None
    env_passthrough: tuple[str, ...] = DEFAULT_ENV_PASSTHROUGH
    max_kernels: int = DEFAULT_MAX_KERNELS  # running at once; a start past it is refused

    @property
    def loopback(self) -> bool:
        return is_loopback(self.ip)

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    @property
    def cors_origin(self) -> str:
        """The origin that gets CORS headers, as a browser spells it; "" for none."""
        if not self.allow_origin:
            return ""
        if self.allow_origin == ANY_ORIGIN:
            return ANY_ORIGIN
        return normalize_origin(self.allow_origin)

    def validate(self) -> None:
        """Refuse insecure or malformed settings with a one-line UsageError."""
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port {self.port} is out of range (0-65535)")
        if not 1 <= self.max_kernels <= MAX_KERNELS_LIMIT:
            raise UsageError(f"max kernels {self.max_kernels} is out of range (1-{MAX_KERNELS_LIMIT})")
        self._check_origin()
        self._check_tls()
        self._check_passthrough()

    def _check_origin(self) -> None:
        origin = self.allow_origin
        if origin == ANY_ORIGIN:
            if not self.allow_insecure_origin:
                raise UsageError(
                    "allow_origin '*' lets any web page use this gateway; "
                    "name the editor's origin, or pass the insecure-origin flag",
                )
        elif origin is not None:
            problem = _origin_problem(origin)
            if problem:
                raise UsageError(f"origin {origin!r} is not scheme://host[:port]: {problem}")

    def _check_tls(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise UsageError("TLS needs both a certificate file and a key file")
        for label, path in (("certificate", self.certfile), ("key", self.keyfile)):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"TLS {label} file not found: {path}")
        if not self.loopback and self.certfile is None:
            raise UsageError(
                f"binding to {self.ip} (not loopback) requires TLS: give a certificate and a key",
            )

    def _check_passthrough(self) -> None:
        for name in self.env_passthrough:
            if _ENV_NAME.fullmatch(name) is None:
                raise UsageError(f"invalid environment variable name {name!r}")
            if name.startswith("KG_") or name.startswith("JUPYTER_"):
                raise UsageError(f"{name} configures the gateway itself and cannot be passed through")


@dataclass(frozen=True)
class GatewaySpec:
    """Everything the gateway child needs except the token."""

    kernel_name: str
    jupyter_data_dir: Path  # holds kernels/<kernel_name>/kernel.json
    serve: ServeOptions = field(default_factory=ServeOptions)
    working_dir: Path | None = None  # kernels' working directory; None: the current one
    log_path: Path | None = None  # None: <jupyter_data_dir>/runtime/envsync-gateway-<port>.log
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    # What the kernelspec must still say at each kernel start (its argv[0] and
    # metadata.envsync.fingerprint); None: what it says when the gateway starts.
    python: str | None = None
    fingerprint: str | None = None
    # The launch process's control socket (`envsync.gateway.control`): the editor API and
    # the check at each kernel start ask it. None: no editor API, pins fixed as above.
    control: Path | None = None

    def validate(self) -> None:
        """The kernel name, then every `ServeOptions` rule."""
        if not rules.is_kernel_name(self.kernel_name):
            raise UsageError(f"invalid kernel name {self.kernel_name!r}")
        if self.log_max_bytes < 4096:
            raise UsageError(f"the gateway log needs at least 4096 bytes (got {self.log_max_bytes})")
        self.serve.validate()

    def to_json(self) -> str:
        s = self.serve
        return json.dumps(
            {
                "kernel_name": self.kernel_name,
                "jupyter_data_dir": str(self.jupyter_data_dir),
                "working_dir": _opt_str(self.working_dir),
                "log_path": _opt_str(self.log_path),
                "log_max_bytes": self.log_max_bytes,
                "python": self.python,
                "fingerprint": self.fingerprint,
                "control": _opt_str(self.control),
                "serve": {
                    "ip": s.ip,
                    "port": s.port,
                    "allow_origin": s.allow_origin,
                    "allow_insecure_origin": s.allow_insecure_origin,
                    "certfile": _opt_str(s.certfile),
                    "keyfile": _opt_str(s.keyfile),
                    "env_passthrough": list(s.env_passthrough),
                    "max_kernels": s.max_kernels,
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> GatewaySpec:
        """Read `to_json`'s document back; UsageError naming the first thing that is wrong."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"cannot read the gateway spec: not JSON ({exc})") from None
        top = _Fields(
            data,
            "spec",
            {
                *("kernel_name", "jupyter_data_dir", "working_dir", "log_path", "log_max_bytes"),
                *("python", "fingerprint", "control", "serve"),
            },
        )
        s = _Fields(
            top.get("serve", dict),
            "serve",
            {
                *("ip", "port", "allow_origin", "allow_insecure_origin", "certfile", "keyfile"),
                *("env_passthrough", "max_kernels"),
            },
        )
        passthrough = s.get("env_passthrough", list)
        if not all(isinstance(n, str) for n in passthrough):
            raise UsageError("cannot read the gateway spec: serve.env_passthrough must list strings")
        serve = ServeOptions(
            ip=s.get("ip", str),
            port=s.get("port", int),
            allow_origin=s.optional("allow_origin", str),
            allow_insecure_origin=s.get("allow_insecure_origin", bool),
            certfile=s.optional_path("certfile"),
            keyfile=s.optional_path("keyfile"),
            env_passthrough=tuple(passthrough),
            max_kernels=s.get("max_kernels", int),
        )
        return cls(
            kernel_name=top.get("kernel_name", str),
            jupyter_data_dir=Path(top.get("jupyter_data_dir", str)),
            serve=serve,
            working_dir=top.optional_path("working_dir"),
            log_path=top.optional_path("log_path"),
            log_max_bytes=top.get("log_max_bytes", int),
            python=top.optional("python", str),
            fingerprint=top.optional("fingerprint", str),
            control=top.optional_path("control"),
        )


# --- internals ---------------------------------------------------------------------------


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


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


class _Fields:
    """Typed access to one JSON object of the spec, refusing unknown or mistyped keys."""

    def __init__(self, data: Any, where: str, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise UsageError(f"cannot read the gateway spec: {where} must be an object")
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"cannot read the gateway spec: unknown field {where}.{unknown[0]}")
        self.data, self.where = data, where

    def get(self, key: str, kind: type[Any]) -> Any:
        if key not in self.data:
            raise UsageError(f"cannot read the gateway spec: {self.where}.{key} is missing")
        value = self.data[key]
        # JSON has no int/bool distinction Python keeps: true is not a port.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(f"cannot read the gateway spec: {self.where}.{key} must be {kind.__name__}")
        return value

    def optional(self, key: str, kind: type[Any]) -> Any:
        return None if self.data.get(key) is None else self.get(key, kind)

    def optional_path(self, key: str) -> Path | None:
        value = self.optional(key, str)
        return None if value is None else Path(value)
