"""The gateway child process: Kernel Gateway serving one envsync kernel.

Run as `python -m envsync.gateway.child ...` by `envsync.gateway.process.start`, never imported by
the CLI. The token arrives only in `KG_AUTH_TOKEN`; everything else is on argv.

What this adds to Kernel Gateway 3.0.1 (each a measured gap, see DESIGN.md):
- `rfc3987_syntax` is made unimportable: it is 70 % of the gateway's start-up time and only
  serves jsonschema's optional "iri" format checks, which nothing here uses;
- kernelspecs come from envsync's data dir only and only the project's kernel can start;
- kernels get the pass-through environment only (KG would hand them its whole environment);
- a bare CORS preflight passes without a token, every other request needs it;
- a loopback bind refuses foreign Host headers (KG turns jupyter_server's check off);
- CORS headers go only to the configured origin;
- the token never reaches a log line;
- SIGINT behaves like SIGTERM: kernels are shut down, then the process exits.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envsync.proc import parent_death_hook

EXIT_USAGE = 2
TOKEN_ENV = "KG_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
# Loopback names a browser may send as Host for a loopback bind.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ALLOW_HEADERS = "Authorization, Content-Type"
ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"


def block_slow_imports() -> None:
    """Make `import rfc3987_syntax` fail at once; jsonschema treats it as an optional extra."""
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Options:
    """What the parent asked for (argv), plus the token (environment)."""

    kernel_name: str
    data_dir: Path
    ip: str
    port: int
    token: str
    allow_origin: str
    allow_insecure_origin: bool
    loopback: bool
    passthrough: tuple[str, ...]
    root_dir: Path
    certfile: str | None
    keyfile: str | None


def parse_args(argv: Sequence[str], token: str) -> Options:
    """Read argv; the token comes from the environment, never from here."""
    p = argparse.ArgumentParser(prog="envsync.gateway.child")
    p.add_argument("--kernel-name", required=True)
    p.add_argument("--jupyter-data-dir", required=True, type=Path)
    p.add_argument("--ip", default="127.0.0.1")
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--allow-origin", default="")
    p.add_argument("--allow-insecure-origin", action="store_true")
    p.add_argument("--loopback", action="store_true")
    p.add_argument("--env-passthrough", default="")
    p.add_argument("--root-dir", type=Path, default=Path.cwd())
    p.add_argument("--certfile")
    p.add_argument("--keyfile")
    a = p.parse_args(list(argv))
    return Options(
        kernel_name=a.kernel_name,
        data_dir=a.jupyter_data_dir,
        ip=a.ip,
        port=a.port,
        token=token,
        allow_origin=a.allow_origin,
        allow_insecure_origin=a.allow_insecure_origin,
        loopback=a.loopback,
        passthrough=tuple(n for n in a.env_passthrough.split(",") if n),
        root_dir=a.root_dir,
        certfile=a.certfile,
        keyfile=a.keyfile,
    )


_TOKEN_PARAM = re.compile(r"(?i)([?&;]token=)[^&;\s#\"']*")


def redact(text: str, token: str) -> str:
    """Replace the token, and any `token=` query value, with `[secret]`."""
    if token:
        text = text.replace(token, "[secret]")
    return _TOKEN_PARAM.sub(r"\1[secret]", text)


def install_log_redaction(token: str) -> None:
    """Redact every log record of this process when it is made, whoever logs it."""
    # A record factory sees all records (tornado.access, the app's own logger, tracebacks'
    # messages) before any handler formats them; a handler filter would miss handlers
    # that are added later.
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a bad format is the logger's problem
            return record
        cleaned = redact(message, token)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)


def host_pattern(bound_ip: str) -> str:
    """A tornado host regex that matches every Host name that is NOT loopback."""
    bound = f"[{bound_ip}]" if ":" in bound_ip else bound_ip
    names = dict.fromkeys([*LOOPBACK_HOSTS, bound.lower()])
    allowed = "|".join(re.escape(n) for n in names if n)
    return rf"(?!(?:{allowed})$).*$"


def kernel_env(passthrough: Sequence[str], requested: Any) -> dict[str, str]:
    """The environment a kernel starts with: the pass-through names and client KERNEL_* values."""
    env = {k: os.environ[k] for k in passthrough if k in os.environ}
    if isinstance(requested, dict):
        # KG always lets a client set KERNEL_* (jupyter_server's gateway client sends
        # KERNEL_USERNAME); nothing else from the request body reaches the kernel.
        env.update(
            {
                k: v
                for k, v in requested.items()
                if isinstance(k, str) and k.startswith("KERNEL_") and isinstance(v, str)
            }
        )
    return env


def within(root: Path, path: Any) -> bool:
    """True if `path` (a client's notebook path, relative to `root`) stays inside `root`."""
    if not isinstance(path, str) or not path:
        return False
    return (root / path).resolve().is_relative_to(root.resolve())




def build_app(opts: Options) -> Any:
    """The configured KernelGatewayApp subclass instance (imports Kernel Gateway)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from jupyter_server.auth.identity import User

    # Kernel Gateway ships no type information.
    from kernel_gateway.auth.identity import GatewayIdentityProvider  # type: ignore[import-untyped]
    from kernel_gateway.gatewayapp import KernelGatewayApp  # type: ignore[import-untyped]
    from kernel_gateway.services.kernels.manager import (  # type: ignore[import-untyped]
        SeedingMappingKernelManager,
    )
    from tornado import web
    from traitlets.config import Config

    class OneKernelSpecManager(KernelSpecManager):
        """Looks only in envsync's data dir and knows only the project's kernel."""

        def _kernel_dirs_default(self) -> list[str]:
            # Not the user's JUPYTER_PATH, ~/.ipython/kernels or the system dirs.
            return [str(opts.data_dir / "kernels")]

        def get_kernel_spec(self, kernel_name: str) -> Any:
            # allowed_kernelspecs only filters listings; resource and spec URLs call this.
            if kernel_name.lower() != opts.kernel_name.lower():
                raise NoSuchKernel(kernel_name)
            return super().get_kernel_spec(kernel_name)

    class PassThroughKernelManager(SeedingMappingKernelManager):  # type: ignore[misc]
        """Starts kernels with the pass-through environment, not the gateway's."""

        async def start_kernel(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["env"] = kernel_env(opts.passthrough, kwargs.get("env"))
            if not within(opts.root_dir, kwargs.get("path")):
                # Without a path jupyter_server leaves cwd unset and the kernel would start
                # in the gateway's own directory (where the envsync package lives); with
                # "../.." it would start outside the notebook's folder.
                kwargs.pop("path", None)
                kwargs["cwd"] = str(opts.root_dir)
            # ipykernel's own parent poller misses a gateway killed while the kernel is
            # still starting when a subreaper (systemd --user) adopts it: its new parent
            # is then not PID 1. The kernel has nothing to save, so SIGKILL it.
            hook = parent_death_hook(signal.SIGKILL, os.getpid())
            if hook is not None:
                # jupyter_client hands extra keyword arguments on to Popen.
                kwargs["preexec_fn"] = hook
            return await super().start_kernel(*args, **kwargs)

    class TokenIdentityProvider(GatewayIdentityProvider):  # type: ignore[misc]
        """The token, and nothing else, authenticates; a bare CORS preflight needs none."""

        def get_user(self, handler: Any) -> Any:
            request = handler.request
            if (
                request.method == "OPTIONS"
                and "Origin" in request.headers
                and "Access-Control-Request-Method" in request.headers
            ):
                # Browsers never send credentials on a preflight; KG's OPTIONS handlers
                # only write headers, so letting them through exposes nothing.
                return User("cors-preflight")
            supplied = self.get_token(handler) or ""
            if self.token and hmac.compare_digest(supplied.encode(), self.token.encode()):
                return self.generate_anonymous_user(handler)
            return None

        def get_user_cookie(self, handler: Any) -> None:
            return None  # no login cookies: a cookie would stand in for the token

        def set_login_cookie(self, handler: Any, user: Any) -> None:
            return None

    class ForeignHostHandler(web.RequestHandler):
        """403 for a Host header that is not a loopback name (DNS rebinding)."""

        def prepare(self) -> None:
            logging.getLogger("envsync.gateway.process").warning(
                "Blocking request with non-loopback Host header %r", self.request.host
            )
            raise web.HTTPError(403)

        def write_error(self, status_code: int, **kwargs: Any) -> None:
            self.set_header("Content-Type", "application/json")
            self.finish('{"reason": "Forbidden", "message": "Host not allowed"}')

    class CorsForAllowedOrigin(web.OutputTransform):
        """Sends Access-Control-* headers only to the configured origin."""

        def __init__(self, request: Any) -> None:
            super().__init__(request)
            self._origin = request.headers.get("Origin")

        def transform_first_chunk(
            self, status_code: int, headers: Any, chunk: bytes, finishing: bool
        ) -> tuple[int, Any, bytes]:
            # KG writes its configured origin on every answer, and jupyter_server echoes
            # any Origin on a preflight; a foreign origin should see no CORS header at all.
            if opts.allow_origin != "*" and self._origin != opts.allow_origin:
                for name in [n for n in headers if n.lower().startswith("access-control-")]:
                    del headers[name]
            return status_code, headers, chunk

    class EnvsyncGatewayApp(KernelGatewayApp):  # type: ignore[misc]
        """KernelGatewayApp with no config files, SIGINT == SIGTERM, and the guards above."""

        _stopping = False

        @property
        def config_file_paths(self) -> list[str]:
            # A jupyter_kernel_gateway_config.py elsewhere must not undo what envsync set.
            return []

        def migrate_config(self) -> None:
            return None  # would copy IPython 3 config into the user's ~/.jupyter

        def init_signal(self) -> None:
            # KG handles SIGINT only on a TTY; ours runs detached, so both stop it cleanly.
            signal.signal(signal.SIGINT, self._signal_stop)
            signal.signal(signal.SIGTERM, self._signal_stop)

        def _signal_stop(self, sig: int, frame: Any) -> None:
            if self._stopping:
                return  # a second signal must not start a second kernel shutdown
            self._stopping = True
            super()._signal_stop(sig, frame)

        def init_webapp(self) -> None:
            super().init_webapp()
            if opts.loopback:
                self.web_app.add_handlers(host_pattern(opts.ip), [(r".*", ForeignHostHandler)])
                self.web_app.settings["allow_remote_access"] = False
            self.web_app.add_transform(CorsForAllowedOrigin)

    c = Config()
    kg = c.KernelGatewayApp
    kg.ip = opts.ip
    kg.port = opts.port
    kg.port_retries = 0  # the parent chose this port; any other would be a surprise
    kg.auth_token = opts.token
    kg.allow_origin = opts.allow_origin
    kg.allow_headers = ALLOW_HEADERS
    kg.allow_methods = ALLOW_METHODS
    kg.max_age = "600"
    kg.force_kernel_name = opts.kernel_name
    kg.default_kernel_name = opts.kernel_name
    kg.env_process_whitelist = []
    kg.kernel_spec_manager_class = OneKernelSpecManager
    kg.kernel_manager_class = PassThroughKernelManager
    kg.identity_provider_class = TokenIdentityProvider
    kg.cookie_secret = secrets.token_bytes(32)  # else KG writes one to the runtime dir
    kg.log_level = "INFO"
    if opts.certfile:
        import ssl

        kg.certfile = opts.certfile
        kg.keyfile = opts.keyfile
        # KG's default pins TLS 1.2 only; let OpenSSL negotiate 1.2 or 1.3.
        kg.ssl_version = int(ssl.PROTOCOL_TLS_SERVER)
    c.JupyterWebsocketPersonality.list_kernels = True  # @jupyterlab/services polls it
    c.JupyterWebsocketPersonality.env_whitelist = []
    c.KernelSpecManager.allowed_kernelspecs = {opts.kernel_name}
    c.KernelSpecManager.ensure_native_kernel = False
    c.MappingKernelManager.root_dir = str(opts.root_dir)
    return EnvsyncGatewayApp(config=c)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; exit 2 on a bad request from the parent."""
    token = os.environ.pop(TOKEN_ENV, "")  # kernels and their children must not see it
    if not token:
        print(f"envsync gateway: {TOKEN_ENV} is not set; refusing to serve", file=sys.stderr)
        return EXIT_USAGE
    opts = parse_args(sys.argv[1:] if argv is None else argv, token)
    if opts.allow_origin == "*" and not opts.allow_insecure_origin:
        print("envsync gateway: origin '*' needs --allow-insecure-origin", file=sys.stderr)
        return EXIT_USAGE
    install_log_redaction(token)
    block_slow_imports()

    from jupyter_client.kernelspec import NoSuchKernel
    from jupyter_core.utils import ensure_event_loop

    loop = ensure_event_loop()
    app = build_app(opts)
    app.initialize(argv=[])
    try:
        app.kernel_spec_manager.get_kernel_spec(opts.kernel_name)
    except NoSuchKernel:
        app.log.critical("kernel %s not found in %s", opts.kernel_name, opts.data_dir / "kernels")
        return EXIT_USAGE
    app.start()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
