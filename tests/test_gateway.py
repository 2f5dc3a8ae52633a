"""The gateway with real Kernel Gateway processes, real ipykernel kernels, real HTTP and WebSocket.

Every process a test starts is ended by its PID in a fixture or `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import websocket

from envsync import proc
from envsync.errors import GatewayError, UsageError
from envsync.gateway import process as gateway
from envsync.gateway import registry as runtime
from envsync.gateway.spec import DEFAULT_ENV_PASSTHROUGH, TOKEN_ENV, GatewaySpec, ServeOptions
from envsync.settings import Settings
from tests.support.gateway_client import auth, channels_url, execute, kernel_pid, start_kernel, write_spec
from tests.support.processes import REPO, alive, children_of, kill_pids
from tests.support.wait import wait_until

KERNEL = "envsync-demo"
ORIGIN = "https://editor.example"
FOREIGN = "https://evil.example"
# Set in this process: the kernel must not inherit it through the gateway.
LEAK = ("ENVSYNC_TEST_NOT_PASSED", "leaked")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


# --- helpers ---------------------------------------------------------------------------------


def end(gw: gateway.RunningGateway, extra_pids: list[int] | tuple[int, ...] = ()) -> None:
    """End a test's gateway and kernels by PID, whatever state the test left them in."""
    pids = [*children_of(gw.pid), *extra_pids]
    if gw.process is not None:
        proc.shutdown(gw.process, interrupt_timeout=5.0, terminate_timeout=2.0)
    kill_pids([pid for pid in pids if alive(pid)])


@contextlib.contextmanager
def started(config: GatewaySpec) -> Iterator[gateway.RunningGateway]:
    gw = gateway.start(config)
    try:
        yield gw
    finally:
        end(gw)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jupyter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    write_spec(root, KERNEL, {"envsync": {"fingerprint": "sha256:test", "project": "demo"}})
    write_spec(root, "python3", {})  # present, yet it must never start
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook-dir").resolve()


@pytest.fixture(scope="module")
def gw(jupyter_dir: Path, workdir: Path) -> Iterator[gateway.RunningGateway]:
    os.environ[LEAK[0]] = LEAK[1]
    try:
        config = GatewaySpec(KERNEL, jupyter_dir, ServeOptions(allow_origin=ORIGIN), working_dir=workdir)
        with started(config) as running:
            yield running
    finally:
        os.environ.pop(LEAK[0], None)


@pytest.fixture(scope="module")
def session(gw: gateway.RunningGateway) -> Iterator[tuple[dict[str, Any], websocket.WebSocket]]:
    """A kernel started by a POST that names python3, connected like a browser would."""
    kernel = start_kernel(gw, {"name": "python3", "env": {"KERNEL_EXTRA": "1", "LD_PRELOAD": "x"}})
    ws = websocket.create_connection(channels_url(gw, kernel["id"]), origin=ORIGIN, timeout=30)
    try:
        yield kernel, ws
    finally:
        ws.close()


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Adopt orphans here, as systemd --user does on a desktop, instead of PID 1."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_child_subreaper = 36
    if prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper")
    try:
        yield
    finally:
        prctl(pr_set_child_subreaper, 0, 0, 0, 0)


def reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


# --- authentication --------------------------------------------------------------------------


def test_api_requires_the_token_in_its_header(gw: gateway.RunningGateway) -> None:
    api = f"{gw.url}/api"
    assert requests.get(api, timeout=5).status_code in (401, 403)
    assert requests.get(api, headers={"Authorization": "token wrong"}, timeout=5).status_code in (
        401,
        403,
    )
    assert requests.get(api, params={"token": "wrong"}, timeout=5).status_code in (401, 403)
    ok = requests.get(api, headers=auth(gw), timeout=5)
    assert ok.status_code == 200
    assert "Set-Cookie" not in ok.headers  # no login cookie that could stand in for the token
    # `?token=` is for the channels WebSocket only (a browser cannot set its headers).
    assert requests.get(api, params={"token": gw.token}, timeout=5).status_code == 401


def test_token_is_neither_in_gateway_argv_nor_in_its_log(
    gw: gateway.RunningGateway, session: tuple[dict[str, Any], websocket.WebSocket]
) -> None:
    assert gw.token.encode() not in Path(f"/proc/{gw.pid}/cmdline").read_bytes()
    assert execute(session[1], "print(6 * 7)") == "42\n"
    assert gw.log_path is not None
    log = gw.log_path.read_text()
    assert "/channels?" in log  # the WebSocket request was logged ...
    assert "token=[secret]" in log  # ... with its token replaced
    assert gw.token not in log


def test_bare_cors_preflight_passes_without_token_but_other_options_do_not(
    gw: gateway.RunningGateway,
) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    r = requests.options(f"{gw.url}/api/kernels", headers=preflight, timeout=5)
    assert r.status_code in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    not_a_preflight = requests.options(f"{gw.url}/api/kernels", timeout=5)
    assert not_a_preflight.status_code in (401, 403)


# --- kernels ---------------------------------------------------------------------------------


def test_kernelspecs_lists_only_the_project_kernel_with_its_fingerprint(
    gw: gateway.RunningGateway,
) -> None:
    r = requests.get(f"{gw.url}/api/kernelspecs", headers=auth(gw), timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["default"] == KERNEL
    assert list(body["kernelspecs"]) == [KERNEL]
    assert body["kernelspecs"][KERNEL]["spec"]["metadata"]["envsync"]["fingerprint"] == "sha256:test"
    hidden = requests.get(f"{gw.url}/api/kernelspecs/python3", headers=auth(gw), timeout=5)
    assert hidden.status_code == 404


def test_post_naming_python3_starts_the_project_kernel_instead(
    gw: gateway.RunningGateway, session: tuple[dict[str, Any], websocket.WebSocket]
) -> None:
    assert session[0]["name"] == KERNEL
    listed = gateway.kernels(gw)
    assert listed and {k["name"] for k in listed} == {KERNEL}


def test_code_runs_on_the_kernelspec_python(session: tuple[dict[str, Any], websocket.WebSocket]) -> None:
    assert execute(session[1], "import sys; print(sys.executable)").strip() == sys.executable


def test_kernel_starts_in_the_configured_working_dir(
    session: tuple[dict[str, Any], websocket.WebSocket], workdir: Path
) -> None:
    assert execute(session[1], "import os; print(os.getcwd())").strip() == str(workdir)


def test_kernel_path_cannot_leave_the_working_dir(gw: gateway.RunningGateway, workdir: Path) -> None:
    kernel = start_kernel(gw, {"path": "../../outside.ipynb"})
    try:
        assert Path(f"/proc/{kernel_pid(gw, kernel['id'])}/cwd").resolve() == workdir
    finally:
        requests.delete(f"{gw.url}/api/kernels/{kernel['id']}", headers=auth(gw), timeout=30)


def test_kernel_starts_with_only_the_passthrough_environment(
    gw: gateway.RunningGateway, session: tuple[dict[str, Any], websocket.WebSocket]
) -> None:
    pid = kernel_pid(gw, session[0]["id"])
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if item)
    assert TOKEN_ENV not in env and gw.token not in "".join(env.values())
    assert LEAK[0] not in env
    assert "LD_PRELOAD" not in env  # from the POST body: refused
    assert env["KERNEL_EXTRA"] == "1"  # KG always lets a client set KERNEL_*
    jupyter_added = {"KERNEL_GATEWAY", "JPY_PARENT_PID", "KERNEL_EXTRA"}
    assert set(env) <= set(DEFAULT_ENV_PASSTHROUGH) | jupyter_added


# --- origin and host -------------------------------------------------------------------------


def test_foreign_origin_gets_no_cors_header_and_no_websocket(
    gw: gateway.RunningGateway, session: tuple[dict[str, Any], websocket.WebSocket]
) -> None:
    r = requests.get(f"{gw.url}/api", headers={**auth(gw), "Origin": FOREIGN}, timeout=5)
    assert "Access-Control-Allow-Origin" not in r.headers
    assert r.status_code != 200
    pre = requests.options(
        f"{gw.url}/api/kernels",
        headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert "Access-Control-Allow-Origin" not in pre.headers
    kernel_id = session[0]["id"]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(channels_url(gw, kernel_id), origin=FOREIGN, timeout=10)
    assert refused.value.status_code == 403


def test_foreign_host_header_is_refused_on_loopback_bind(gw: gateway.RunningGateway) -> None:
    api = f"{gw.url}/api"
    evil = {**auth(gw), "Host": f"evil.example:{gw.port}"}
    assert requests.get(api, headers=evil, timeout=5).status_code == 403
    for host in (f"localhost:{gw.port}", f"127.0.0.1:{gw.port}", "[::1]", "localhost"):
        assert requests.get(api, headers={**auth(gw), "Host": host}, timeout=5).status_code == 200


# --- configuration ---------------------------------------------------------------------------


def test_validate_refuses_wildcard_origin_without_insecure_flag(jupyter_dir: Path) -> None:
    with pytest.raises(UsageError, match=r"'\*'.*insecure"):
        GatewaySpec(KERNEL, jupyter_dir, ServeOptions(allow_origin="*")).validate()
    GatewaySpec(KERNEL, jupyter_dir, ServeOptions(allow_origin="*", allow_insecure_origin=True)).validate()


def test_validate_refuses_public_bind_without_tls(jupyter_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="0.0.0.0 .*requires TLS"):
        GatewaySpec(KERNEL, jupyter_dir, ServeOptions(ip="0.0.0.0")).validate()
    missing = tmp_path / "cert.pem"
    with pytest.raises(UsageError, match="not found"):
        GatewaySpec(
            KERNEL, jupyter_dir, ServeOptions(ip="0.0.0.0", certfile=missing, keyfile=missing)
        ).validate()


@pytest.mark.parametrize(
    "origin", ["https://editor.example/", "editor.example", "ftp://editor.example", "https://a/b"]
)
def test_validate_refuses_origin_that_is_not_scheme_host_port(jupyter_dir: Path, origin: str) -> None:
    with pytest.raises(UsageError, match=r"scheme://host\[:port\]"):
        GatewaySpec(KERNEL, jupyter_dir, ServeOptions(allow_origin=origin)).validate()


def test_second_gateway_on_the_same_port_gets_a_clear_error(
    gw: gateway.RunningGateway, jupyter_dir: Path
) -> None:
    with pytest.raises(GatewayError, match=f"port {gw.port} is already in use"):
        gateway.start(GatewaySpec(KERNEL, jupyter_dir, ServeOptions(port=gw.port)))


def test_start_reports_why_the_gateway_died(tmp_path: Path) -> None:
    (tmp_path / "kernels" / "envsync-broken").mkdir(parents=True)
    (tmp_path / "kernels" / "envsync-broken" / "kernel.json").write_text("{not json")
    with pytest.raises(GatewayError, match="exited .* before it was ready") as failed:
        gateway.start(GatewaySpec("envsync-broken", tmp_path), ready_timeout=30)
    assert failed.value.detail and "JSONDecodeError" in failed.value.detail


def test_tls_gateway_serves_https(jupyter_dir: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        proc.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                key,
                "-out",
                cert,
            ],
            timeout=60,
        )
    except Exception:  # noqa: BLE001 - any failure here means no openssl to test with
        pytest.skip("openssl cannot make a test certificate")
    with started(GatewaySpec(KERNEL, jupyter_dir, ServeOptions(certfile=cert, keyfile=key))) as gw:
        assert gw.url.startswith("https://")
        r = requests.get(f"{gw.url}/api", headers=auth(gw), verify=str(cert), timeout=5)
        assert r.status_code == 200


def test_gateway_child_never_imports_rfc3987_syntax() -> None:
    code = (
        "from envsync.gateway.child import block_slow_imports; block_slow_imports();"
        "import kernel_gateway.gatewayapp, jsonschema, jupyter_events;"
        "jsonschema.Draft7Validator({'format': 'iri'}, format_checker="
        "jsonschema.Draft7Validator.FORMAT_CHECKER).validate('x');"
        "jupyter_events.EventLogger().register_event_schema({'$id': 'http://e.example/a',"
        "'version': '1', 'type': 'object', 'properties': {'a': {'type': 'string'}}})"
    )
    env = proc.clean_env()
    blocked = proc.run([sys.executable, "-X", "importtime", "-c", code], env=env, cwd=REPO)
    assert import_cost_us(blocked.stderr, "rfc3987_syntax") < 1000  # a failed lookup only
    assert "rfc3987_syntax.syntax_helpers" not in blocked.stderr
    assert "jupyter_events" in blocked.stderr
    plain = proc.run([sys.executable, "-X", "importtime", "-c", "import jsonschema"], env=env)
    assert import_cost_us(plain.stderr, "rfc3987_syntax") > 10_000  # what the block saves


def import_cost_us(importtime: str, module: str) -> int:
    """Cumulative microseconds `python -X importtime` reports for `module`."""
    for line in importtime.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == module:
            return int(parts[1])
    raise AssertionError(f"{module} not in the import log")


# --- stopping --------------------------------------------------------------------------------


def test_stop_leaves_neither_gateway_nor_kernel_processes(jupyter_dir: Path) -> None:
    with started(GatewaySpec(KERNEL, jupyter_dir)) as gw:
        start_kernel(gw)
        start_kernel(gw)
        kernels = children_of(gw.pid)
        assert len(kernels) == 2
        gateway.stop(gw)
        assert not alive(gw.pid)
        assert not [pid for pid in kernels if alive(pid)]


def test_sigint_to_the_gateway_shuts_its_kernels_down(jupyter_dir: Path) -> None:
    with started(GatewaySpec(KERNEL, jupyter_dir)) as gw:
        kernel = start_kernel(gw)
        kernels = children_of(gw.pid)
        assert kernels
        os.kill(gw.pid, signal.SIGINT)
        assert gw.process is not None
        gw.process.wait(timeout=15)
        assert wait_until(lambda: not any(alive(p) for p in kernels), timeout=5)
        assert gw.log_path is not None
        assert f"Kernel shutdown: {kernel['id']}" in gw.log_path.read_text()


def test_kernels_exit_when_the_gateway_is_killed_with_sigkill(jupyter_dir: Path, subreaper: None) -> None:
    gw = gateway.start(GatewaySpec(KERNEL, jupyter_dir))
    kernels: list[int] = []
    try:
        ready = start_kernel(gw)
        ws = websocket.create_connection(channels_url(gw, ready["id"]), timeout=30)
        assert execute(ws, "print('up')") == "up\n"  # its parent poller is running
        ws.close()
        start_kernel(gw)  # killed while this one is still starting
        kernels = children_of(gw.pid)
        assert len(kernels) == 2
        os.kill(gw.pid, signal.SIGKILL)
        assert gw.process is not None
        gw.process.wait(timeout=5)
        assert wait_until(lambda: not any(alive(p) for p in kernels), timeout=10)
    finally:
        end(gw, kernels)
        reap(kernels)


# --- runtime registry ------------------------------------------------------------------------


def test_runtime_records_a_gateway_privately_and_stops_it_by_port(jupyter_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    with started(GatewaySpec(KERNEL, jupyter_dir)) as gw:
        kernel_pids = [kernel_pid(gw, start_kernel(gw)["id"])]
        rec = runtime.record(
            settings, gw, notebook=tmp_path / "nb.ipynb", project="demo", fingerprint="sha256:t"
        )
        files = list(settings.runtime_dir.glob("*.json"))
        assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert runtime.running(settings) == [rec]
        assert [k["name"] for k in gateway.kernels(rec.as_running())] == [KERNEL]
        assert runtime.stop(settings, port=gw.port) == [rec]
        assert not alive(gw.pid)
        assert not any(alive(p) for p in kernel_pids)
        assert runtime.running(settings) == []
        assert not list(settings.runtime_dir.glob("*.json"))


def test_runtime_drops_entries_whose_process_is_gone_or_is_not_a_gateway(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")
    finished = proc.spawn([sys.executable, "-c", "pass"], env=proc.clean_env())
    finished.wait(timeout=30)
    for pid, port in ((finished.pid, 1), (os.getpid(), 2)):
        fake = gateway.RunningGateway(pid=pid, port=port, url=f"http://127.0.0.1:{port}", token="t")
        runtime.record(settings, fake, notebook=tmp_path / "nb.ipynb", project="p", fingerprint="f")
    assert runtime.running(settings) == []
    assert not list(settings.runtime_dir.glob("*.json"))


def test_runtime_stop_needs_a_port_when_several_gateways_run(jupyter_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    config = GatewaySpec(KERNEL, jupyter_dir)
    with started(config) as first, started(config) as second:
        for gw in (first, second):
            runtime.record(settings, gw, notebook=tmp_path / "nb.ipynb", project="p", fingerprint="f")
        with pytest.raises(UsageError, match="2 gateways are running"):
            runtime.stop(settings)
        stopped = runtime.stop(settings, all=True)
        assert sorted(r.port for r in stopped) == sorted([first.port, second.port])
        assert not alive(first.pid) and not alive(second.pid)


# --- the spec the child reads ----------------------------------------------------------------


def test_spec_survives_the_json_round_trip(tmp_path: Path) -> None:
    full = GatewaySpec(
        KERNEL,
        tmp_path / "jupyter",
        ServeOptions(
            ip="::1",
            port=8123,
            allow_origin=ORIGIN,
            allow_insecure_origin=True,
            certfile=tmp_path / "cert.pem",
            keyfile=tmp_path / "key.pem",
            env_passthrough=("PATH", "HOME"),
        ),
        working_dir=tmp_path,
        log_path=tmp_path / "gw.log",
    )
    assert GatewaySpec.from_json(full.to_json()) == full
    plain = GatewaySpec(KERNEL, tmp_path)
    assert GatewaySpec.from_json(plain.to_json()) == plain


def _spec_doc(**serve: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(GatewaySpec(KERNEL, Path("/nowhere")).to_json())
    doc["serve"].update(serve)
    return doc


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        ("[]", "spec must be an object"),
        (json.dumps({**_spec_doc(), "token": "t"}), "unknown field spec.token"),
        (
            json.dumps({k: v for k, v in _spec_doc().items() if k != "kernel_name"}),
            "spec.kernel_name is missing",
        ),
        (json.dumps(_spec_doc(port="8888")), "serve.port must be int"),
        (json.dumps(_spec_doc(port=True)), "serve.port must be int"),
        (json.dumps(_spec_doc(env_passthrough=["PATH", 1])), "must list strings"),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "unknown-field",
        "missing-field",
        "port-text",
        "port-bool",
        "env-names",
    ],
)
def test_spec_reader_names_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(UsageError, match="cannot read the gateway spec") as refused:
        GatewaySpec.from_json(text)
    assert problem in refused.value.message


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--spec", "{not json"], "not JSON"),
        (["--spec", json.dumps({**_spec_doc(), "token": "t"})], "unknown field"),
        (["--kernel-name", KERNEL, "--port", "8888"], "expected exactly `--spec JSON`"),
        ([], "expected exactly `--spec JSON`"),
        (["--spec", json.dumps(_spec_doc(allow_origin="*"))], "'*' lets any web page"),
    ],
    ids=["not-json", "unknown-field", "old-argv", "no-argv", "wildcard-origin"],
)
def test_child_refuses_a_spec_it_cannot_read_with_exit_2_and_one_line(argv: list[str], problem: str) -> None:
    from envsync.errors import EXIT_USAGE

    env = proc.clean_env({TOKEN_ENV: "a-token"})
    res = proc.run(
        [sys.executable, "-m", "envsync.gateway.child", *argv], env=env, cwd=REPO, check=False, timeout=60
    )
    assert res.returncode == EXIT_USAGE, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("envsync gateway: "), res.stderr
    assert problem in lines[0]


def test_child_argv_is_the_spec_and_never_the_token(gw: gateway.RunningGateway, workdir: Path) -> None:
    argv = psutil.Process(gw.pid).cmdline()
    assert not any(gw.token in arg for arg in argv)
    assert argv[1:4] == ["-m", "envsync.gateway.child", "--spec"] and len(argv) == 5
    spec = GatewaySpec.from_json(argv[4])
    assert spec.kernel_name == KERNEL and spec.serve.port == gw.port
    assert spec.serve.allow_origin == ORIGIN and spec.working_dir == workdir


def test_runtime_drops_an_entry_whose_pid_started_at_another_time(
    gw: gateway.RunningGateway, tmp_path: Path
) -> None:
    import dataclasses

    settings = Settings(home=tmp_path / "home")
    assert gw.started is not None
    reused = dataclasses.replace(gw, started=gw.started - 3600, process=None)
    runtime.record(settings, reused, notebook=tmp_path / "nb.ipynb", project="demo", fingerprint="f")
    assert runtime.running(settings) == []  # as if the PID now named a later process
    assert alive(gw.pid)  # and nothing was signalled
    rec = runtime.record(settings, gw, notebook=tmp_path / "nb.ipynb", project="demo", fingerprint="f")
    assert runtime.running(settings) == [rec]
    runtime.forget(settings, gw.port)
