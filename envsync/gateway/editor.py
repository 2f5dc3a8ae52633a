"""The editor API of the gateway child: `/api/envsync`, `/api/envsync/diff`, `/api/envsync/lock`.

Imported only in the child (it pulls in tornado). The child owns no state of its own here:
each handler hands the request to `envsync launch` over its control socket
(`envsync.gateway.control`, in an executor thread so the IOLoop never waits) and writes
back what it answers. Only the list of running kernels comes from the child, since only
it knows which kernelspec each kernel was started from.

The handlers are rebuilt by `handlers.rebuild` like every other route: the token check
before anything is read, and error bodies that are a reason and a one-line message. CORS
headers are the ones Kernel Gateway sends on its own routes; `policy.CorsForAllowedOrigin`
keeps them for the allowed origin only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tornado import web
from tornado.ioloop import IOLoop

from envsync.errors import GatewayError
from envsync.gateway import control

STATE_TIMEOUT = 15.0
# The lock request waits while the user answers at the launch terminal (up to
# `envsync.ops.consent.CONSENT_TIMEOUT`); the margin covers the validation around it.
LOCK_TIMEOUT = 150.0
KERNEL_START_TIMEOUT = 30.0
_CORS = {
    "kg_allow_headers": "Access-Control-Allow-Headers",
    "kg_allow_methods": "Access-Control-Allow-Methods",
    "kg_allow_origin": "Access-Control-Allow-Origin",
    "kg_max_age": "Access-Control-Max-Age",
}


async def ask(path: Path, request: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any]]:
    """`control.ask` off the IOLoop; a 503 when the launch process does not answer."""
    try:
        return await IOLoop.current().run_in_executor(
            None, lambda: control.ask(path, request, timeout=timeout)
        )
    except GatewayError as exc:
        raise web.HTTPError(503, "%s", exc.message) from None


async def kernel_pins(path: Path) -> tuple[str, str]:
    """The python and fingerprint a kernel may start with now, after the launch process has
    checked the env's files; HTTPError (409) when the check fails."""
    status, body = await ask(path, {"op": "kernel-start"}, KERNEL_START_TIMEOUT)
    if status != 200:
        raise web.HTTPError(status, "%s", str(body.get("message", "the environment cannot start a kernel")))
    return str(body.get("python", "")), str(body.get("fingerprint", ""))


class _EditorHandler(web.RequestHandler):
    """JSON in and out, Kernel Gateway's CORS headers, the control socket in the settings."""

    def set_default_headers(self) -> None:
        for setting, header in _CORS.items():
            value = self.settings.get(setting)
            if value:
                self.set_header(header, value)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def options(self, *_args: Any) -> None:
        self.set_status(204)
        self.finish()

    @property
    def control_path(self) -> Path:
        return Path(self.settings["envsync_control"])

    def manifest_request(self, op: str) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(body, dict) or "manifest" not in body:
            raise web.HTTPError(400, 'the body must be {"manifest": <metadata.envsync>}')
        return {"op": op, "manifest": body["manifest"]}

    def answer(self, status: int, body: dict[str, Any]) -> None:
        if status >= 400:
            raise web.HTTPError(status, "%s", str(body.get("message", "")))
        self.set_status(status)
        self.finish(json.dumps(body))


class StateHandler(_EditorHandler):
    """GET /api/envsync: what the launch serves, its build state and last file check, and the kernels."""

    async def get(self) -> None:
        status, body = await ask(self.control_path, {"op": "state"}, STATE_TIMEOUT)
        if status == 200:
            body["kernels"] = running_kernels(self.settings.get("kernel_manager"))
        self.answer(status, body)


class DiffHandler(_EditorHandler):
    """POST /api/envsync/diff: how the editor's lock differs from the served one."""

    async def post(self) -> None:
        self.answer(*await ask(self.control_path, self.manifest_request("diff"), STATE_TIMEOUT))


class LockHandler(_EditorHandler):
    """POST /api/envsync/lock: ask the launch to serve the editor's lock."""

    async def post(self) -> None:
        self.answer(*await ask(self.control_path, self.manifest_request("lock"), LOCK_TIMEOUT))


ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/api/envsync", StateHandler),
    (r"/api/envsync/diff", DiffHandler),
    (r"/api/envsync/lock", LockHandler),
]


def running_kernels(manager: Any) -> list[dict[str, str]]:
    """Each running kernel's id and the fingerprint of the kernelspec it was started from."""
    from envsync.gateway.policy import spec_pins

    if manager is None:
        return []
    out = []
    for kernel_id in list(manager.list_kernel_ids()):
        try:
            km = manager.get_kernel(kernel_id)
        except KeyError:
            continue  # shut down in between
        out.append({"id": str(kernel_id), "fingerprint": spec_pins(getattr(km, "_kernel_spec", None))[1]})
    return out
