"""The gateway child process: Kernel Gateway serving one envsync kernel.

Run as `python -m envsync.gateway.child --spec JSON` by `envsync.gateway.process.start`,
never imported by the CLI. The spec (`envsync.gateway.spec.GatewaySpec`) arrives as
that one argument; the token only in the environment variable `TOKEN_ENV`. The
guards it adds to Kernel Gateway live in `envsync.gateway.policy`.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from envsync.errors import EXIT_USAGE, UsageError
from envsync.gateway.spec import SPEC_OPTION, TOKEN_ENV, GatewaySpec

ALLOW_HEADERS = "Authorization, Content-Type"
ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
_TORNADO_LOGGERS = ("tornado.access", "tornado.application", "tornado.general")


def block_slow_imports() -> None:
    """Make `import rfc3987_syntax` fail at once; jsonschema treats it as an optional extra."""
    # It is 70 % of the gateway's start-up time and only serves jsonschema's optional
    # "iri" format checks, which nothing here uses.
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]


def read_spec(argv: Sequence[str]) -> GatewaySpec:
    """The spec from `--spec JSON`, validated; UsageError with one line otherwise."""
    if len(argv) != 2 or argv[0] != SPEC_OPTION:
        raise UsageError(f"expected exactly `{SPEC_OPTION} JSON` on the command line")
    spec = GatewaySpec.from_json(argv[1])
    spec.validate()
    return spec


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard one (each connection is a file); the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def pin_kernelspec(spec: GatewaySpec, found: Any) -> GatewaySpec:
    """The spec with the python and fingerprint the kernelspec must keep; UsageError if it differs now."""
    from envsync.gateway import policy

    problem = policy.spec_mismatch(found, spec.python or "", spec.fingerprint or "")
    if problem:
        raise UsageError(f"kernelspec {spec.kernel_name} does not run the environment to serve: {problem}")
    python, fingerprint = policy.spec_pins(found)
    return replace(
        spec, python=spec.python or python or None, fingerprint=spec.fingerprint or fingerprint or None
    )


def build_config(spec: GatewaySpec, token: str) -> Any:
    """The traitlets Config that puts `envsync.gateway.policy`'s classes in charge."""
    from traitlets.config import Config

    from envsync.gateway import policy

    serve = spec.serve
    root_dir = str(spec.working_dir or Path.cwd())
    c = Config()
    kg = c.KernelGatewayApp
    kg.ip = serve.ip
    kg.port = serve.port
    kg.port_retries = 0  # the parent chose this port; any other would be a surprise
    kg.auth_token = token
    kg.allow_origin = serve.cors_origin
    kg.allow_headers = ALLOW_HEADERS
    kg.allow_methods = ALLOW_METHODS
    kg.max_age = "600"
    kg.force_kernel_name = spec.kernel_name
    kg.default_kernel_name = spec.kernel_name
    kg.env_process_whitelist = []
    kg.kernel_spec_manager_class = policy.EnvsyncKernelSpecManager
    kg.kernel_manager_class = policy.EnvsyncKernelManager
    kg.identity_provider_class = policy.EnvsyncIdentityProvider
    kg.cookie_secret = secrets.token_bytes(32)  # else KG writes one to the runtime dir
    kg.log_level = "INFO"
    if serve.certfile and serve.keyfile:
        import ssl

        kg.certfile = str(serve.certfile)
        kg.keyfile = str(serve.keyfile)
        # KG's default pins TLS 1.2 only; let OpenSSL negotiate 1.2 or 1.3.
        kg.ssl_version = int(ssl.PROTOCOL_TLS_SERVER)
    c.JupyterWebsocketPersonality.list_kernels = True  # @jupyterlab/services polls it
    c.JupyterWebsocketPersonality.env_whitelist = []
    c.EnvsyncKernelSpecManager.data_dir = str(spec.jupyter_data_dir)
    c.EnvsyncKernelSpecManager.kernel_name = spec.kernel_name
    c.KernelSpecManager.allowed_kernelspecs = {spec.kernel_name}
    c.KernelSpecManager.ensure_native_kernel = False
    c.EnvsyncKernelManager.passthrough = list(serve.env_passthrough)
    c.EnvsyncKernelManager.max_kernels = serve.max_kernels
    c.EnvsyncKernelManager.python = spec.python or ""
    c.EnvsyncKernelManager.fingerprint = spec.fingerprint or ""
    c.EnvsyncKernelManager.control = _opt_str(spec.control)
    c.EnvsyncGatewayApp.control = _opt_str(spec.control)
    c.MappingKernelManager.root_dir = root_dir
    return c


def _opt_str(path: Path | None) -> str:
    return "" if path is None else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; exit 2 on a bad request from the parent."""
    token = os.environ.pop(TOKEN_ENV, "")  # kernels and their children must not see it
    if not token:
        print(f"envsync gateway: {TOKEN_ENV} is not set; refusing to serve", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = read_spec(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"envsync gateway: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    block_slow_imports()

    import logging

    from jupyter_client.kernelspec import NoSuchKernel
    from jupyter_core.utils import ensure_event_loop

    from envsync.gateway import logs, policy

    logs.install_log_redaction(token)
    raise_open_files_limit()
    loop = ensure_event_loop()
    # Read before the app exists: the kernel manager is configured with what it says.
    probe = policy.EnvsyncKernelSpecManager(data_dir=str(spec.jupyter_data_dir), kernel_name=spec.kernel_name)
    try:
        spec = pin_kernelspec(spec, probe.get_kernel_spec(spec.kernel_name))
    except NoSuchKernel:
        print(
            f"envsync gateway: kernel {spec.kernel_name} not found in {spec.jupyter_data_dir / 'kernels'}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except UsageError as exc:
        print(f"envsync gateway: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    app = policy.EnvsyncGatewayApp(config=build_config(spec, token))
    app.initialize(argv=[])
    logs.install(spec.log_max_bytes, [app.log, *(logging.getLogger(n) for n in _TORNADO_LOGGERS)])
    app.start()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
