"""Attacks on a running gateway, on loopback only: no token, wrong tokens, tokens in the wrong
place, foreign origins, DNS rebinding, other kernelspecs, every path without a token,
the token in `ps` or in logs, binds that would expose the gateway without TLS, and the
editor API and the launch's control socket.

The gateway is envsync's own (`gateway.start`) with a kernelspec on the dev venv's
python, which has the real ipykernel, so kernels really start and run code.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from envsync.errors import UsageError
from envsync.gateway import process as gateway
from envsync.gateway.spec import GatewaySpec, ServeOptions
from tests.reliability.conftest import (
    FIGURES,
    assert_one_clean_error,
    cli,
    count,
    output_of,
    ready_line,
    spawn_envsync,
    stop_launch,
    tree_digest,
)
from tests.support.gateway_client import (
    auth,
    channels_url,
    connect,
    execute,
    kernel_pid,
    start_kernel,
    write_spec,
)
from tests.support.processes import alive, child_env, descendants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

KERNEL = "envsync-target"
ORIGIN = "https://editor.example"
NOBODY = 65534


@pytest.fixture(scope="module")
def jupyter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attacks-jupyter")
    write_spec(root, KERNEL, {"envsync": {"fingerprint": "sha256:attacks", "project": "target"}})
    write_spec(root, "python3", {})  # present on disk, yet it must never start
    write_spec(root, "envsync-other", {"envsync": {"project": "other"}})
    return root


@pytest.fixture(scope="module")
def gw(jupyter_dir: Path) -> Iterator[gateway.RunningGateway]:
    running = gateway.start(
        GatewaySpec(KERNEL, jupyter_dir, ServeOptions(allow_origin=ORIGIN), working_dir=jupyter_dir)
    )
    try:
        yield running
    finally:
        kids = descendants(running.pid)
        gateway.stop(running)
        assert not alive(running.pid) and not any(alive(p) for p in kids)


@pytest.fixture(scope="module")
def kernel(gw: gateway.RunningGateway) -> dict[str, Any]:
    """A kernel started with the token, as the web editor would; attacks then aim at it."""
    return start_kernel(gw)


def attempt(kind: str) -> None:
    count(f"attacks.{kind}")


# --- tokens ---------------------------------------------------------------------------------

WRONG_PLACES = {
    "no-token": {},
    "wrong-token": {"Authorization": "token not-the-token"},
    "empty-token": {"Authorization": "token "},
    "x-token-header": {"X-Token": "{token}"},
    "x-auth-token-header": {"X-Auth-Token": "{token}"},
    "cookie-token": {"Cookie": "token={token}"},
    "cookie-xsrf": {"Cookie": "_xsrf={token}"},
    "xsrf-header": {"X-XSRFToken": "{token}"},
    "bare-authorization": {"Authorization": "{token}"},
    "basic-authorization": {"Authorization": "Basic {token}"},
    "token-with-suffix": {"Authorization": "token {token}x"},
    "token-prefix-only": {"Authorization": "token {half}"},
}
WRONG_QUERIES = {
    "Token": "{token}",
    "TOKEN": "{token}",
    "_token": "{token}",
    "access_token": "{token}",
    "token": "{half}",
}
PROTECTED = [
    "/api",
    "/api/kernels",
    "/api/kernelspecs",
    "/api/sessions",
    "/api/kernelspecs/" + KERNEL,
    "/kernelspecs/" + KERNEL + "/kernel.json",
]


def fill(value: str, gw: gateway.RunningGateway) -> str:
    return value.format(token=gw.token, half=gw.token[: len(gw.token) // 2])


@pytest.mark.parametrize("place", list(WRONG_PLACES))
def test_request_without_the_token_where_it_belongs_is_refused(
    place: str, gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    headers = {k: fill(v, gw) for k, v in WRONG_PLACES[place].items()}
    for path in [*PROTECTED, f"/api/kernels/{kernel['id']}"]:
        r = requests.get(f"{gw.url}{path}", headers=headers, timeout=10)
        assert r.status_code in (401, 403), (path, r.status_code)
        assert gw.token not in r.text
        attempt("token")
    for method, path in (
        ("POST", "/api/kernels"),
        ("POST", f"/api/kernels/{kernel['id']}/restart"),
        ("POST", f"/api/kernels/{kernel['id']}/interrupt"),
        ("DELETE", f"/api/kernels/{kernel['id']}"),
    ):
        r = requests.request(method, f"{gw.url}{path}", headers=headers, json={}, timeout=10)
        assert r.status_code in (401, 403), (method, path, r.status_code)
        attempt("token")


@pytest.mark.parametrize("name", list(WRONG_QUERIES))
def test_token_in_the_wrong_query_parameter_is_refused(name: str, gw: gateway.RunningGateway) -> None:
    r = requests.get(f"{gw.url}/api/kernels", params={name: fill(WRONG_QUERIES[name], gw)}, timeout=10)
    assert r.status_code in (401, 403)
    attempt("token")


def test_refused_requests_change_nothing_on_the_kernel(
    gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    pid = kernel_pid(gw, kernel["id"])
    for method, path in (("DELETE", ""), ("POST", "/restart"), ("POST", "/interrupt")):
        r = requests.request(method, f"{gw.url}/api/kernels/{kernel['id']}{path}", timeout=10)
        assert r.status_code in (401, 403)
        attempt("token")
    assert kernel_pid(gw, kernel["id"]) == pid and alive(pid)
    assert [k["id"] for k in gateway.kernels(gw)] == [kernel["id"]]


def test_the_token_in_the_documented_places_is_accepted(
    gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    assert requests.get(f"{gw.url}/api/kernels", headers=auth(gw), timeout=10).status_code == 200
    ws = websocket.create_connection(channels_url(gw, kernel["id"]), origin=ORIGIN, timeout=10)
    ws.close()


@pytest.mark.parametrize(
    "path", ["/api", "/api/kernels", "/api/kernelspecs", "/api/sessions", "/api/kernels/{kid}"]
)
def test_the_token_in_a_rest_query_is_refused(
    path: str, gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    # `?token=` ends up in proxy and browser histories: only the channels WebSocket takes it.
    r = requests.get(f"{gw.url}{path.format(kid=kernel['id'])}", params={"token": gw.token}, timeout=10)
    assert r.status_code == 401, (path, r.status_code)
    attempt("token")


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_the_token_in_a_form_body_is_refused(method: str, gw: gateway.RunningGateway) -> None:
    before = [k["id"] for k in gateway.kernels(gw)]
    r = requests.request(method, f"{gw.url}/api/kernels", data={"token": gw.token}, timeout=10)
    assert r.status_code == 401
    assert [k["id"] for k in gateway.kernels(gw)] == before
    attempt("token")


@pytest.mark.parametrize(
    "how", ["no-token", "wrong-token", "x-token-header", "cookie", "authorization-bearer"]
)
def test_websocket_without_the_token_in_its_query_is_refused(
    how: str, gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    base = gw.url.replace("http", "ws", 1) + f"/api/kernels/{kernel['id']}/channels?session_id=attack"
    url = base + ("&token=wrong" if how == "wrong-token" else "")
    header = {
        "x-token-header": [f"X-Token: {gw.token}"],
        "cookie": [f"Cookie: token={gw.token}"],
        "authorization-bearer": [f"Authorization: Bearer {gw.token}"],
    }.get(how, [])
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, header=header, origin=ORIGIN, timeout=10)
    assert refused.value.status_code in (401, 403)
    attempt("websocket")


def test_websocket_to_a_kernel_that_does_not_exist_is_refused(gw: gateway.RunningGateway) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            channels_url(gw, "00000000-0000-0000-0000-000000000000"), origin=ORIGIN, timeout=10
        )
    assert refused.value.status_code == 404
    attempt("websocket")


# --- origins ----------------------------------------------------------------------------------

FOREIGN_ORIGINS = [
    "https://evil.example",
    "https://editor.example.evil.example",
    "https://evil-editor.example",
    "http://editor.example",  # same host, other scheme
    "https://editor.example:8443",  # same host, other port
    "null",  # sandboxed iframes and file:// pages
    "https://EDITOR.example.evil",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origin_gets_no_cors_grant_on_rest_even_with_the_token(
    origin: str, gw: gateway.RunningGateway
) -> None:
    r = requests.get(f"{gw.url}/api/kernels", headers={**auth(gw), "Origin": origin}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
    assert r.status_code != 200  # jupyter_server refuses a cross-origin API call outright
    pre = requests.options(
        f"{gw.url}/api/kernels",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=10,
    )
    assert not any(h.lower().startswith("access-control-allow") for h in pre.headers)
    attempt("origin")


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origin_cannot_open_the_kernel_websocket_even_with_the_token(
    origin: str, gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(channels_url(gw, kernel["id"]), origin=origin, timeout=10)
    assert refused.value.status_code == 403
    attempt("origin")


def test_the_editor_origin_gets_its_exact_cors_grant_and_a_working_websocket(
    gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    r = requests.get(f"{gw.url}/api/kernels", headers={**auth(gw), "Origin": ORIGIN}, timeout=10)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    ws = connect(gw, kernel["id"], origin=ORIGIN)
    try:
        assert execute(ws, "print(1 + 1)") == "2\n"
    finally:
        ws.close()


def test_preflight_without_a_token_grants_headers_only_and_starts_nothing(
    gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    before = [k["id"] for k in gateway.kernels(gw)]
    for path in ("/api/kernels", f"/api/kernels/{kernel['id']}/restart", f"/api/kernels/{kernel['id']}"):
        r = requests.options(
            f"{gw.url}{path}", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}, timeout=10
        )
        assert r.status_code in (200, 204) and not r.content
        attempt("origin")
    assert [k["id"] for k in gateway.kernels(gw)] == before


# --- Host header (DNS rebinding) ---------------------------------------------------------------

REBOUND_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "127.0.0.1.evil.example:{port}",
    "localhost.evil.example",
    "127.0.0.1.nip.io:{port}",
    "0.0.0.0:{port}",
    "127.1:{port}",
    "[::ffff:127.0.0.1]:{port}",
    "editor.example",
]


@pytest.mark.parametrize("host", REBOUND_HOSTS)
def test_dns_rebinding_host_header_is_refused_on_rest_and_websocket(
    host: str, gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    h = host.format(port=gw.port)
    r = requests.get(f"{gw.url}/api/kernels", headers={**auth(gw), "Host": h}, timeout=10)
    assert r.status_code == 403
    assert kernel["id"] not in r.text
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(channels_url(gw, kernel["id"]), host=h, origin=f"http://{h}", timeout=10)
    assert refused.value.status_code == 403
    attempt("host")


# --- other kernelspecs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["python3", "envsync-other", "../../python3", "PYTHON3", "does-not-exist", ""]
)
def test_post_naming_another_kernelspec_starts_only_the_project_kernel(
    name: str, gw: gateway.RunningGateway
) -> None:
    r = requests.post(f"{gw.url}/api/kernels", headers=auth(gw), json={"name": name}, timeout=60)
    attempt("kernelspec")
    if r.status_code != 201:
        assert r.status_code in (400, 403, 404)
        return
    started = r.json()
    try:
        assert started["name"] == KERNEL
        argv = Path(f"/proc/{kernel_pid(gw, started['id'])}/cmdline").read_bytes().split(b"\0")
        assert argv[0].decode() == sys.executable and b"ipykernel_launcher" in argv
    finally:
        assert (
            requests.delete(f"{gw.url}/api/kernels/{started['id']}", headers=auth(gw), timeout=60).status_code
            == 204
        )


@pytest.mark.parametrize(
    "path",
    [
        "/api/kernelspecs/python3",
        "/api/kernelspecs/envsync-other",
        "/kernelspecs/python3/kernel.json",
        "/kernelspecs/envsync-other/kernel.json",
        "/kernelspecs/..%2f..%2fetc/passwd",
    ],
)
def test_other_kernelspecs_are_invisible_even_with_the_token(path: str, gw: gateway.RunningGateway) -> None:
    r = requests.get(f"{gw.url}{path}", headers=auth(gw), timeout=10)
    assert r.status_code == 404
    attempt("kernelspec")
    listed = requests.get(f"{gw.url}/api/kernelspecs", headers=auth(gw), timeout=10).json()
    assert list(listed["kernelspecs"]) == [KERNEL]


# --- every path without a token ---------------------------------------------------------------

PATHS = [
    "/",
    "/api",
    "/api/",
    "/api/kernelspecs",
    "/api/kernelspecs/" + KERNEL,
    "/api/kernels",
    "/api/kernels/{kid}",
    "/api/kernels/{kid}/channels",
    "/api/kernels/{kid}/restart",
    "/api/kernels/{kid}/interrupt",
    "/api/sessions",
    "/api/sessions/x",
    "/api/swagger.json",
    "/api/swagger.yaml",
    "/kernelspecs/" + KERNEL + "/kernel.json",
    "/kernelspecs/" + KERNEL + "/logo-64x64.png",
    "/kernelspecs/python3/kernel.json",
    "/login",
    "/logout",
    "/static/",
    "/static/style/style.min.css",
    "/metrics",
    "/api/status",
    "/api/contents",
    "/api/me",
    "/api/config",
    "/api/terminals",
    "/api/nbconvert",
    "/api/events/subscribe",
    "/api/shutdown",
    "/tree",
    "/lab",
    "/files/kernel.json",
    "/favicon.ico",
    "/robots.txt",
    "/static/../../../etc/passwd",
    "/kernelspecs/../../../etc/passwd",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# What answers without a token: Kernel Gateway's API description, a file shipped in the
# kernel_gateway package and the same on every machine (GET), and an empty OPTIONS answer on
# those same two unauthenticated handlers (see docs/reliability.md).
REACHABLE = {("GET", "/api/swagger.json"), ("GET", "/api/swagger.yaml")}
EMPTY = {("OPTIONS", "/api/swagger.json"), ("OPTIONS", "/api/swagger.yaml")}


@pytest.mark.parametrize("path", PATHS)
def test_every_path_without_a_token_is_refused_or_not_found_except_the_api_description(
    path: str, gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    seen = {}
    for method in METHODS:
        r = requests.request(
            method, f"{gw.url}{path.format(kid=kernel['id'])}", timeout=10, allow_redirects=False
        )
        seen[method] = r.status_code
        attempt("unauthenticated_path")
        if (method, path) in REACHABLE:
            assert r.status_code == 200
            assert r.content == packaged_api_description(path)  # nothing about this machine
        elif (method, path) in EMPTY:
            assert r.status_code == 200 and r.content == b""
        else:
            assert r.status_code in (401, 403, 404, 405), (method, path, r.status_code, r.text[:200])
            assert kernel["id"] not in r.text and KERNEL not in r.text
    FIGURES.setdefault("attacks.unauthenticated_paths", {})[path] = seen


@dataclass
class Answer:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def raw_request(gw: gateway.RunningGateway, method: str, path: str) -> Answer:
    """Send `path` exactly as written (no client-side `..` clean-up), without any credentials."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, path, body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
        resp = conn.getresponse()
        return Answer(resp.status, resp.read())
    finally:
        conn.close()


def packaged_api_description(path: str) -> bytes:
    import kernel_gateway

    name = path.rsplit("/", 1)[1]
    return (Path(kernel_gateway.__file__).parent / "jupyter_websocket" / name).read_bytes()


# --- the token in ps, /proc and logs -----------------------------------------------------------


def as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to act as another user")
    return subprocess.run(
        [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_another_user_sees_no_token_in_ps_and_cannot_read_the_gateway_environment(
    gw: gateway.RunningGateway, kernel: dict[str, Any]
) -> None:
    kpid = kernel_pid(gw, kernel["id"])
    for pid in (gw.pid, kpid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert gw.token.encode() not in cmdline
        seen = as_nobody(["cat", f"/proc/{pid}/cmdline"])
        assert seen.returncode == 0 and gw.token not in seen.stdout  # `ps` for everyone: no token
        hidden = as_nobody(["cat", f"/proc/{pid}/environ"])
        assert hidden.returncode != 0 and gw.token not in hidden.stdout  # the environment: owner only
        attempt("token_exposure")
    ps = as_nobody(["ps", "-eo", "args"]) if shutil.which("ps") else None
    if ps is not None:
        assert gw.token not in ps.stdout
    # The kernel's own environment does not carry the token either, even for its owner.
    assert gw.token.encode() not in Path(f"/proc/{kpid}/environ").read_bytes()


def test_token_never_reaches_the_gateway_log(gw: gateway.RunningGateway, kernel: dict[str, Any]) -> None:
    ws = connect(gw, kernel["id"], origin=ORIGIN)
    try:
        assert execute(ws, "print('logged')") == "logged\n"
    finally:
        ws.close()
    requests.get(f"{gw.url}/api/kernels", params={"token": gw.token}, timeout=10)
    requests.get(f"{gw.url}/api/kernels", params={"token": gw.token[:-1]}, timeout=10)
    requests.get(f"{gw.url}/api/kernels;token={gw.token}", timeout=10)
    requests.get(f"{gw.url}/{gw.token}", timeout=10)  # the token as a path: a 404 the log records
    assert gw.log_path is not None
    log = gw.log_path.read_text()
    assert "/channels?" in log and "token=[secret]" in log
    assert gw.token not in log and gw.token[:-1] not in log
    assert oct(gw.log_path.stat().st_mode & 0o777) == "0o600"
    runtime = gw.log_path.parent
    for f in runtime.iterdir():
        if f.is_file():
            assert gw.token.encode() not in f.read_bytes(), f
    attempt("token_exposure")


@pytest.fixture
def launched(
    tmp_path: Path, good_nb: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, Any], Any, str]]:
    """`envsync launch --json` of the local-index notebook with the token from ENVSYNC_TOKEN."""
    token = "reliability-token-" + os.urandom(8).hex()
    env = child_env(ENVSYNC_TOKEN=token)
    child = spawn_envsync(["launch", good_nb, "--json"], log_dir=tmp_path / "logs", env=env)
    try:
        info = ready_line(child)
        assert info is not None, output_of(child)
        yield info, child, token
    finally:
        stop_launch(child)


def test_launch_keeps_the_token_out_of_ps_stderr_and_logs(
    launched: tuple[dict[str, Any], Any, str], tmp_path: Path
) -> None:
    info, child, token = launched
    assert info["token"] == token
    for pid in (child.pid, info["pid"]):
        assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    requests.get(f"{info['url']}/api/kernels", params={"token": token}, timeout=10)
    _, err = output_of(child)
    assert token not in err
    home = tmp_path / "home"
    for f in home.rglob("*"):
        if f.is_file() and token.encode() in f.read_bytes():
            # Only the runtime record (for `envsync status` and `stop`) holds it, owner-only.
            assert f.parent.name == "run" and (f.stat().st_mode & 0o777) == 0o600, f
    attempt("token_exposure")


# --- binds that would expose the gateway -----------------------------------------------------


def _external_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


BINDS = ["0.0.0.0", "::", "127.0.0.1.nip.io", "{external}"]


@pytest.mark.parametrize("ip", BINDS)
def test_non_loopback_bind_without_tls_is_refused_before_any_work(
    ip: str, tmp_path: Path, good_nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if ip == "{external}":
        ext = _external_address()
        if ext is None:
            pytest.skip("this machine has no non-loopback IPv4 address")
        ip = ext
    before = tree_digest(tmp_path)
    r = cli(capsys, "launch", good_nb, "--ip", ip)
    assert_one_clean_error(r, codes=2, text="requires TLS")
    assert tree_digest(tmp_path) == before
    assert not (tmp_path / "home" / "envs").exists()  # refused before building anything
    with pytest.raises(UsageError, match="requires TLS"):
        gateway.start(GatewaySpec(KERNEL, tmp_path, ServeOptions(ip=ip)))
    attempt("bind")


@pytest.mark.parametrize(
    "extra",
    [
        ["--allow-origin", "*"],
        ["--allow-origin", "https://editor.example/"],
        ["--allow-origin", "javascript:alert(1)"],
        ["--ip", "0.0.0.0", "--certfile", "missing.pem"],
        ["--token", "with space"],
    ],
    ids=["wildcard-origin", "origin-with-path", "origin-javascript", "cert-without-key", "token-with-space"],
)
def test_insecure_launch_options_are_refused(
    extra: list[str], tmp_path: Path, good_nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = cli(capsys, "launch", good_nb, *extra)
    assert_one_clean_error(r, codes=2)
    assert not (tmp_path / "home" / "envs").exists()
    attempt("bind")


# --- the editor API and the launch's control socket -------------------------------------------


class Recorder:
    """A stand-in for the launch's control handler that records what reaches it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(request)
        if request.get("op") == "kernel-start":
            return 409, {"message": "the environment's files differ from the lock (alpha)"}
        return 200, {"op": request.get("op")}


@pytest.fixture(scope="module")
def editor_gw(jupyter_dir: Path) -> Iterator[tuple[gateway.RunningGateway, Recorder, Path]]:
    from envsync.gateway.control import ControlServer

    recorder = Recorder()
    server = ControlServer(recorder)
    running = gateway.start(
        GatewaySpec(
            KERNEL, jupyter_dir, ServeOptions(allow_origin=ORIGIN), working_dir=jupyter_dir, control=server.path
        )
    )
    try:
        yield running, recorder, server.path
    finally:
        gateway.stop(running)
        server.close()
        assert not alive(running.pid)


EDITOR_PATHS = ["/api/envsync", "/api/envsync/diff", "/api/envsync/lock", "/api/envsync/x"]


@pytest.mark.parametrize("path", EDITOR_PATHS)
def test_the_editor_api_without_the_token_reaches_nothing_and_reads_no_body(
    path: str, editor_gw: tuple[gateway.RunningGateway, Recorder, Path]
) -> None:
    gw, recorder, _path = editor_gw
    before = len(recorder.requests)
    for method in METHODS:
        r = requests.request(method, f"{gw.url}{path}", timeout=10)
        assert r.status_code == 401, (method, path, r.status_code)
        attempt("editor_api_unauthenticated")
    # A body far past the cap, sent without the token: answered 401 from the headers alone.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {64 << 20}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 401")
    assert len(recorder.requests) == before


def test_a_kernel_start_is_refused_when_the_launch_says_the_files_differ(
    editor_gw: tuple[gateway.RunningGateway, Recorder, Path],
) -> None:
    gw, recorder, _path = editor_gw
    r = requests.post(f"{gw.url}/api/kernels", json={}, headers=auth(gw), timeout=30)
    assert r.status_code == 409, r.text
    assert r.json() == {"reason": "Conflict", "message": "the environment's files differ from the lock (alpha)"}
    assert {"op": "kernel-start"} in recorder.requests
    assert requests.get(f"{gw.url}/api/kernels", headers=auth(gw), timeout=10).json() == []
    assert descendants(gw.pid) == []


def test_another_user_cannot_reach_the_control_socket(
    editor_gw: tuple[gateway.RunningGateway, Recorder, Path],
) -> None:
    _gw, recorder, path = editor_gw
    before = len(recorder.requests)
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(path)!r})\n"
        "s.sendall(b'{\"op\": \"lock\"}'); s.shutdown(socket.SHUT_WR); print(s.recv(100))\n"
    )
    seen = as_nobody([sys.executable, "-c", code])
    assert seen.returncode != 0 and "PermissionError: [Errno 13]" in seen.stderr, seen
    attempt("control_socket_other_user")
    assert len(recorder.requests) == before
