"""The gateway child's security pieces, as Kernel Gateway classes configured through traitlets.

Imported only by `envsync.gateway.child` (it pulls in Kernel Gateway, jupyter_server and
tornado). What each piece adds to Kernel Gateway 3.0.1:
- `EnvsyncKernelSpecManager`: kernelspecs come from envsync's data dir only, and only the
  project's kernel can start;
- `EnvsyncKernelManager`: kernels get the pass-through environment only (KG would hand them
  its whole environment), start inside the root dir (symlinks resolved), get a server-made
  id, never exceed `max_kernels`, start or restart only from a kernelspec that still names
  the served env and fingerprint (asked of the launch process, which checks the env's
  files first and may have switched the env for an editor's lock), and die with the gateway;
- `EnvsyncIdentityProvider`: `guard.TokenCheck` decides (a bare CORS preflight passes
  without a token), and no cookie stands in for the token;
- `ForeignHostHandler`: a loopback bind refuses foreign Host headers (KG turns
  jupyter_server's check off);
- `CorsForAllowedOrigin`: CORS headers, and Private Network Access's grant on a
  preflight, go only to the configured origin;
- `EnvsyncGatewayApp`: no config files, SIGINT behaves like SIGTERM (kernels are shut
  down, then the process exits), `guard.GuardedHTTPServer` in front, every handler
  rebuilt by `handlers.harden`, and the editor API (`editor.ROUTES`) when the launch
  process gave a control socket.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_server.auth.identity import User

# Kernel Gateway ships no type information: pyproject.toml tells mypy so, for this module only.
from kernel_gateway.auth.identity import GatewayIdentityProvider
from kernel_gateway.gatewayapp import KernelGatewayApp
from kernel_gateway.services.kernels.manager import SeedingMappingKernelManager
from tornado import web
from traitlets import Integer, List, Unicode

from envsync.gateway import editor, guard, handlers
from envsync.gateway.spec import ANY_ORIGIN, DEFAULT_MAX_KERNELS, is_loopback
from envsync.proc import parent_death_hook

# Loopback names a browser may send as Host for a loopback bind.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


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


def kernel_cwd(root: Path, path: Any) -> Path:
    """Where a kernel for the notebook at `path` starts: its folder, symlinks resolved, inside `root`."""
    base = root.resolve()
    if not within(base, path):
        # No path: the gateway's own directory (where the envsync package lives) would be
        # the cwd; one that climbs out, even through a symlink: outside the notebook's folder.
        return base
    # jupyter_server would join and normalise the text, so `link/../..` could climb out
    # where the resolved path does not: the resolved one is the only one used.
    target = (base / str(path).lstrip("/")).resolve()
    while target != base and not target.is_dir():
        target = target.parent
    return target


def spec_pins(spec: Any) -> tuple[str, str]:
    """A kernelspec's interpreter (argv[0]) and metadata.envsync.fingerprint; "" where missing."""
    argv = getattr(spec, "argv", None) or [""]
    metadata = getattr(spec, "metadata", None)
    envsync = metadata.get("envsync") if isinstance(metadata, dict) else None
    fingerprint = envsync.get("fingerprint") if isinstance(envsync, dict) else None
    return str(argv[0]), fingerprint if isinstance(fingerprint, str) else ""


def spec_mismatch(spec: Any, python: str, fingerprint: str) -> str | None:
    """What in a kernelspec differs from the env this gateway serves, or None."""
    found_python, found_fingerprint = spec_pins(spec)
    if python and found_python != python:
        return f"it runs {found_python!r} instead of {python!r}"
    if fingerprint and found_fingerprint != fingerprint:
        return f"its fingerprint is {found_fingerprint!r} instead of {fingerprint!r}"
    return None


class EnvsyncKernelSpecManager(KernelSpecManager):
    """Looks only in envsync's data dir and knows only the project's kernel."""

    data_dir = Unicode(config=True, help="envsync's Jupyter data dir (holds kernels/<name>)")
    kernel_name = Unicode(config=True, help="the one kernel this gateway may start")

    def _kernel_dirs_default(self) -> list[str]:
        # Not the user's JUPYTER_PATH, ~/.ipython/kernels or the system dirs.
        return [str(Path(self.data_dir) / "kernels")]

    def get_kernel_spec(self, kernel_name: str) -> Any:
        # allowed_kernelspecs only filters listings; resource and spec URLs call this.
        if kernel_name.lower() != self.kernel_name.lower():
            raise NoSuchKernel(kernel_name)
        return super().get_kernel_spec(kernel_name)


class EnvsyncKernelManager(SeedingMappingKernelManager):
    """Starts kernels with the pass-through environment, not the gateway's, and within limits."""

    passthrough = List(Unicode(), config=True, help="environment names a kernel inherits")
    max_kernels = Integer(DEFAULT_MAX_KERNELS, config=True, help="kernels running or starting at once")
    python = Unicode("", config=True, help="the interpreter the kernelspec must run")
    fingerprint = Unicode("", config=True, help="the lock fingerprint the kernelspec must carry")
    control = Unicode("", config=True, help="the launch process's control socket; empty: none")
    # The ids of kernels being started: a kernel is counted from its request on.
    _claims: set[str] = set()

    async def start_kernel(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("kernel_id") is not None:
            # jupyter_server would take the client's id as is (`x y`, `../k`) or hand back
            # the running kernel that has it.
            raise web.HTTPError(400, "kernel ids are made by the gateway: leave kernel_id out")
        # Parallel requests cannot overshoot, and a kernel that is both registered and
        # still finishing its start is not counted twice (a set of ids, not a counter).
        if len(self._kernels.keys() | self._claims) >= self.max_kernels:
            raise web.HTTPError(
                429, f"this gateway runs at most {self.max_kernels} kernels at once: shut one down first"
            )
        kernel_id = kwargs["kernel_id"] = str(uuid.uuid4())
        kwargs["env"] = kernel_env(self.passthrough, kwargs.get("env"))
        kwargs["cwd"] = str(kernel_cwd(Path(self.root_dir), kwargs.pop("path", None)))
        # ipykernel's own parent poller misses a gateway killed while the kernel is
        # still starting when a subreaper (systemd --user) adopts it: its new parent
        # is then not PID 1. The kernel has nothing to save, so SIGKILL it.
        hook = parent_death_hook(signal.SIGKILL, os.getpid())
        if hook is not None:
            # jupyter_client hands extra keyword arguments on to Popen.
            kwargs["preexec_fn"] = hook
        self._claims = self._claims | {kernel_id}
        try:
            if self.control:
                # The launch process checks the env's files and says which env the
                # kernelspec names now (an editor's lock update may have switched it).
                self.python, self.fingerprint = await editor.kernel_pins(Path(self.control))
            return await super().start_kernel(*args, **kwargs)
        finally:
            self._claims = self._claims - {kernel_id}

    async def restart_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> Any:
        if self.control:
            self.python, self.fingerprint = await editor.kernel_pins(Path(self.control))
            km = self.get_kernel(kernel_id)
            # A restart reuses the spec read at the start; forget it, so a restarted kernel
            # runs the env the kernelspec names now, checked below like a new one.
            km._kernel_spec = None
            problem = spec_mismatch(km.kernel_spec, self.python, self.fingerprint)
            if problem:
                raise web.HTTPError(409, "the kernelspec changed on disk: %s", problem)
        return await super().restart_kernel(kernel_id, *args, **kwargs)

    def pre_start_kernel(self, kernel_name: str | None, kwargs: Any) -> Any:
        km, name, kernel_id = super().pre_start_kernel(kernel_name, kwargs)
        # The kernel manager keeps the spec it reads here for the start and every restart:
        # checking this very object leaves no gap for a rewrite of kernel.json.
        problem = spec_mismatch(km.kernel_spec, self.python, self.fingerprint)
        if problem:
            self.log.error("refusing to start kernel %s: its kernelspec changed on disk: %s", name, problem)
            raise web.HTTPError(
                409,
                f"kernelspec {name} no longer runs the environment this gateway serves; "
                "run `envsync launch` again",
            )
        return km, name, kernel_id


class EnvsyncIdentityProvider(GatewayIdentityProvider):
    """The token, and nothing else, authenticates; a bare CORS preflight needs none."""

    def get_user(self, handler: Any) -> Any:
        request = handler.request
        if guard.is_preflight(request.method, request.headers):
            # Browsers never send credentials on a preflight; KG's OPTIONS handlers
            # only write headers, so letting them through exposes nothing.
            return User("cors-preflight")
        if self.token and guard.TokenCheck(self.token).matches(self.get_token(handler)):
            return self.generate_anonymous_user(handler)
        return None

    def get_token(self, handler: Any) -> str | None:
        # Not a form body, and `?token=` only where a browser cannot send a header.
        request = handler.request
        path, _, query = request.uri.partition("?")
        return guard.supplied_token(path, query, request.headers)

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

    def __init__(self, request: Any, *, allowed: str) -> None:
        super().__init__(request)
        self._origin = request.headers.get("Origin")
        self._allowed = allowed
        self._private_network = request.method == "OPTIONS" and (
            request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true"
        )

    def transform_first_chunk(
        self, status_code: int, headers: Any, chunk: bytes, finishing: bool
    ) -> tuple[int, Any, bytes]:
        # KG writes its configured origin on every answer, and jupyter_server echoes
        # any Origin on a preflight; a foreign origin should see no CORS header at all.
        if self._allowed != ANY_ORIGIN and self._origin != self._allowed:
            for name in [n for n in headers if n.lower().startswith("access-control-")]:
                del headers[name]
        elif self._private_network and "Access-Control-Allow-Origin" in headers:
            # Chromium's Private Network Access asks a public page's preflight to a
            # loopback server for this one more permission.
            headers["Access-Control-Allow-Private-Network"] = "true"
        return status_code, headers, chunk


class EnvsyncGatewayApp(KernelGatewayApp):
    """KernelGatewayApp with no config files, SIGINT == SIGTERM, and the guards above."""

    control = Unicode("", config=True, help="the launch process's control socket: serves the editor API")
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
        handlers.harden(self.web_app, guard.TokenCheck(self.auth_token))
        if is_loopback(self.ip):
            self.web_app.add_handlers(host_pattern(self.ip), [(r".*", ForeignHostHandler)])
            self.web_app.settings["allow_remote_access"] = False
        if self.control:
            # Added after the foreign-Host rule, so that rule still comes first.
            self.web_app.settings["envsync_control"] = self.control
            check = guard.TokenCheck(self.auth_token)
            routes = [(path, handlers.rebuild(cls, check)) for path, cls in editor.ROUTES]
            self.web_app.add_handlers(r".*$", routes)
        # tornado makes a transform from the request alone: bind the origin beforehand.
        transform = functools.partial(CorsForAllowedOrigin, allowed=self.allow_origin)
        self.web_app.add_transform(cast("type[web.OutputTransform]", transform))

    def init_http_server(self) -> None:
        import resource

        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.http_server = guard.GuardedHTTPServer(
            self.web_app,
            check=guard.TokenCheck(self.auth_token),
            cors_origin=self.allow_origin,
            max_connections=guard.connection_cap(open_files),
            ssl_options=self._build_ssl_options(),
        )
        try:
            self.http_server.listen(self.port, self.ip)
        except OSError as exc:
            self.log.critical("cannot listen on %s port %s: %s", self.ip, self.port, exc.strerror)
            self.exit(1)
