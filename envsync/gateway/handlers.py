"""What every request handler of the gateway child does on top of Kernel Gateway's.

Imported only in the child (it pulls in tornado and Kernel Gateway). `harden` rebuilds each
handler class of the web application with:
- `_Checked`: the token check of `guard.TokenCheck` again in `prepare` (in place of Kernel
  Gateway's, which also reads a form body and compares with `!=`), and error bodies that
  are a reason and a message, and for a 5xx an error id, never a traceback (the log gets
  the traceback under that id);
- for the kernelspec API, `_PublicSpec`: a model without argv, env or paths;
- for kernelspec files, `_ResourcesOnly`: the logos and kernel.js/css, never kernel.json.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from http.client import responses
from typing import TYPE_CHECKING, Any

from jupyter_server.kernelspecs.handlers import KernelSpecResourceHandler
from jupyter_server.services.kernelspecs.handlers import KernelSpecHandler, MainKernelSpecHandler
from kernel_gateway.mixins import TokenAuthorizationMixin
from tornado import web

from envsync.gateway.guard import TokenCheck

if TYPE_CHECKING:
    # The mixins below are combined with tornado handlers by `harden`; typed as one.
    _Handler = web.RequestHandler
else:
    _Handler = object

_log = logging.getLogger("envsync.gateway.errors")
_RESOURCE = re.compile(r"logo-[\w-]+\.(?:png|svg)|kernel\.(?:js|css)")
_PUBLIC_SPEC = ("display_name", "language", "interrupt_mode")
_PUBLIC_ENVSYNC = ("fingerprint", "project", "hosts")  # hosts: a kernelspec whose kernels run elsewhere
ERROR_MESSAGE = "the gateway could not handle this request; its log has the details under this error id"


def public_spec_model(model: dict[str, Any]) -> dict[str, Any]:
    """A kernelspec model as clients may see it: name, display name, language, fingerprint, project."""
    spec = _dict(model.get("spec"))
    envsync = _dict(_dict(spec.get("metadata")).get("envsync"))
    public: dict[str, Any] = {k: spec[k] for k in _PUBLIC_SPEC if k in spec}
    # @jupyterlab/services requires an argv list and an env object in every kernelspec.
    public.update({"argv": [], "env": {}})
    public["metadata"] = (
        {"envsync": {k: envsync[k] for k in _PUBLIC_ENVSYNC if k in envsync}} if envsync else {}
    )
    return {"name": model.get("name"), "spec": public, "resources": _dict(model.get("resources"))}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Checked(_Handler):
    """The token check and error bodies every handler gets; mixed in first."""

    envsync_check: TokenCheck

    def prepare(self) -> Any:
        request = self.request
        if not self.envsync_check.allows(request.method, request.uri, request.headers):
            raise web.HTTPError(401, "this gateway needs its token")
        if TokenAuthorizationMixin in type(self).__mro__:
            # Skip Kernel Gateway's own check: the one above has decided.
            return super(TokenAuthorizationMixin, self).prepare()
        return super().prepare()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)
            return
        request = self.request
        self._envsync_error_id = uuid.uuid4().hex[:16]
        _log.error(
            "error %s: %s %s failed",
            self._envsync_error_id,
            request.method,
            request.path,
            exc_info=(typ, value, tb),
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = (kwargs.get("exc_info") or (None, None, None))[1]
        reason = responses.get(status_code, "Unknown HTTP Error")
        body: dict[str, Any]
        if status_code >= 500:
            error_id = getattr(self, "_envsync_error_id", None)
            if error_id is None:
                error_id = self._envsync_error_id = uuid.uuid4().hex[:16]
                _log.error("error %s: answered %d", error_id, status_code)
            body = {"reason": reason, "message": ERROR_MESSAGE, "error-id": error_id}
        else:
            message = reason
            if isinstance(exc, web.HTTPError):
                reason = exc.reason or reason
                if exc.log_message:
                    try:
                        message = exc.log_message % exc.args if exc.args else exc.log_message
                    except (TypeError, ValueError):
                        message = exc.log_message
            body = {"reason": reason, "message": message}
        # send_error cleared the CORS headers prepare() had set: without them a browser
        # shows the page a CORS failure instead of this answer (the output transform
        # still strips them for a foreign origin).
        set_cors = getattr(self, "set_cors_headers", None)
        if set_cors is not None:
            set_cors()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


class _PublicSpec(_Handler):
    """Kernelspec API answers without argv, env or the notebook's and env's paths."""

    def finish(self, chunk: Any = None) -> Any:
        if isinstance(chunk, (str, bytes)) and self.get_status() == 200:
            try:
                data = json.loads(chunk)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("kernelspecs"), dict):
                data["kernelspecs"] = {n: public_spec_model(m) for n, m in data["kernelspecs"].items()}
                chunk = json.dumps(data)
            elif isinstance(data, dict) and "spec" in data:
                chunk = json.dumps(public_spec_model(data))
        return super().finish(chunk)


class _ResourcesOnly:
    """Serves a kernelspec's logos and kernel.js/css; kernel.json (argv, paths) is not one of them."""

    async def get(self, kernel_name: str, path: str, include_body: bool = True) -> Any:
        if _RESOURCE.fullmatch(path) is None:
            raise web.HTTPError(404)
        return await super().get(kernel_name, path, include_body=include_body)  # type: ignore[misc]


def harden(app: web.Application, check: TokenCheck, *, skip: tuple[type, ...] = ()) -> None:
    """Rebuild every handler class routed by `app` (except `skip`) with the mixins above."""

    def walk(router: Any) -> None:
        for rule in getattr(router, "rules", []):
            target = rule.target
            if hasattr(target, "rules"):
                walk(target)
            elif isinstance(target, type) and issubclass(target, web.RequestHandler) and target not in skip:
                rule.target = rebuild(target, check)

    walk(app.default_router)


def rebuild(cls: type[web.RequestHandler], check: TokenCheck) -> type:
    """`cls` with the token check and error bodies every handler gets (and the kernelspec filters where they apply)."""
    bases: tuple[type, ...] = (_Checked,)
    if issubclass(cls, (MainKernelSpecHandler, KernelSpecHandler)):
        bases += (_PublicSpec,)
    if issubclass(cls, KernelSpecResourceHandler):
        bases += (_ResourcesOnly,)
    return type(cls.__name__, (*bases, cls), {"envsync_check": check})
