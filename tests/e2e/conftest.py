"""End-to-end fixtures: a real `envsync launch` of examples/quickstart.ipynb, static servers
for the example browser client on other origins, and helpers that end processes by PID.

The quickstart lock installs numpy and ipykernel from the public index (marker `network`);
tests that drive Chromium carry the marker `browser`. Missing Chromium, Node or the client's
node_modules is a skip with the reason, or a failure when ENVSYNC_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from tests.support.processes import descendants, free_port, kill_pids, wait_gone

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
CLIENT_DIR = REPO / "examples" / "browser-client"
QUICKSTART = REPO / "examples" / "quickstart.ipynb"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("ENVSYNC_CHROMIUM", "/usr/bin/chromium"))

FIRST_BUILD_TIMEOUT = float(os.environ.get("ENVSYNC_E2E_LAUNCH_TIMEOUT", "300"))
STOP_TIMEOUT = 30.0


# --- prerequisites ---------------------------------------------------------------------


def require(condition: bool, reason: str) -> None:
    """Skip with `reason`, or fail when CI demands the browser tools (ENVSYNC_REQUIRE_BROWSER=1)."""
    if condition:
        return
    if os.environ.get("ENVSYNC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (ENVSYNC_REQUIRE_BROWSER=1, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _node_modules_reason() -> str | None:
    for package in ("@jupyterlab/services", "playwright-core"):
        if not (CLIENT_DIR / "node_modules" / package / "package.json").is_file():
            return (
                f"{package} is not installed in {CLIENT_DIR / 'node_modules'}: "
                f"run `cd examples/browser-client && npm ci && npm run build`"
            )
    return None


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` binary, with the example client's node_modules installed."""
    path = shutil.which("node")
    require(path is not None, "node is not on PATH (Node 20 or newer is needed)")
    assert path is not None
    problem = _node_modules_reason()
    require(problem is None, problem or "")
    return path


@pytest.fixture(scope="session")
def browser(node: str) -> str:
    """Chromium and the built bundle: everything browser_check.mjs needs."""
    require(
        CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK),
        f"Chromium not found at {CHROMIUM}: `apt-get install -y chromium chromium-driver` "
        "(or set ENVSYNC_CHROMIUM)",
    )
    bundle = CLIENT_DIR / "dist" / "bundle.js"
    require(bundle.is_file(), f"{bundle} is missing: run `npm run build` in examples/browser-client")
    return str(CHROMIUM)


# --- processes -------------------------------------------------------------------------


def stop_process(
    process: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT
) -> int:
    """Send `sig` to the process by PID, wait, escalate to SIGTERM then SIGKILL; its return code."""
    if process.poll() is None:
        os.kill(process.pid, sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    for escalate, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(process.pid, escalate)
        except ProcessLookupError:
            break
        try:
            return process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return process.wait(timeout=5.0)


def last_json_line(text: str) -> dict[str, Any]:
    """The last stdout line that is a JSON object (libraries may log lines before it)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise AssertionError(f"no JSON object line in the output:\n{text[-3000:]}")


@pytest.fixture(scope="session")
def run_node(node: str) -> Callable[..., dict[str, Any]]:
    """Run a .mjs script in tests/e2e with node; return its JSON report (and the raw result)."""

    def run(
        script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
    ) -> dict[str, Any]:
        full_env = {**os.environ, "ENVSYNC_CLIENT_DIR": str(CLIENT_DIR), **(env or {})}
        try:
            done = subprocess.run(
                [node, str(E2E_DIR / script), *args],
                env=full_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=E2E_DIR,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{script} did not finish in {timeout} s:\n{exc.stdout}\n{exc.stderr}"
            ) from None
        try:
            report = last_json_line(done.stdout)
        except AssertionError:
            raise AssertionError(
                f"{script} exited {done.returncode} without a report:\nstdout:\n{done.stdout[-3000:]}\n"
                f"stderr:\n{done.stderr[-3000:]}"
            ) from None
        report["_returncode"] = done.returncode
        report["_stderr"] = done.stderr[-3000:]
        return report

    return run


# --- static servers for the browser client ---------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@dataclass
class StaticSite:
    """examples/browser-client served on 127.0.0.1:<port>: one browser origin."""

    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _serve_client() -> StaticSite:
    handler = functools.partial(_QuietHandler, directory=str(CLIENT_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, name=f"static-{server.server_address[1]}", daemon=True
    )
    thread.start()
    return StaticSite(server, thread)


@pytest.fixture(scope="session")
def client_site() -> Iterator[StaticSite]:
    """The example client on the origin the gateway allows (--allow-origin)."""
    site = _serve_client()
    yield site
    site.stop()


@pytest.fixture(scope="session")
def foreign_site() -> Iterator[StaticSite]:
    """The same page on a third port: an origin the gateway does NOT allow."""
    site = _serve_client()
    yield site
    site.stop()


# --- the notebook and envsync launch ---------------------------------------------------


@dataclass(frozen=True)
class LockFacts:
    fingerprint: str
    numpy_version: str
    kernel_name: str


@pytest.fixture(scope="session")
def quickstart_lock() -> LockFacts:
    """What the example notebook's lock says (read straight from the JSON)."""
    nb = json.loads(QUICKSTART.read_text(encoding="utf-8"))
    manifest = nb["metadata"]["envsync"]
    lock = manifest["lock"]
    versions = {p["version"] for p in lock["packages"] if p["name"].lower() == "numpy"}
    assert len(versions) == 1, f"expected one locked numpy version, got {versions}"
    return LockFacts(
        fingerprint=lock["tool"]["envsync"]["fingerprint"],
        numpy_version=versions.pop(),
        kernel_name=f"envsync-{manifest['project']}",
    )


@dataclass
class Launched:
    """A running `envsync launch`: its JSON line, home folder and process."""

    info: dict[str, Any]
    home: Path
    notebook: Path
    process: subprocess.Popen[str] = field(repr=False)
    log: Path

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def token(self) -> str:
        return str(self.info["token"])

    @property
    def connection(self) -> str:
        """The one string an editor pastes: the URL with the token in its fragment."""
        return str(self.info["connection"])

    @property
    def gateway_pid(self) -> int:
        return int(self.info["pid"])

    @property
    def envs_dir(self) -> Path:
        return self.home / "envs"

    def get(self, path: str, timeout: float = 10.0) -> requests.Response:
        return requests.get(
            self.url + path, headers={"Authorization": f"token {self.token}"}, timeout=timeout
        )

    def kernels(self) -> list[dict[str, Any]]:
        """GET /api/kernels on the gateway, with its token."""
        response = self.get("/api/kernels")
        assert response.status_code == 200, response.text
        result = response.json()
        assert isinstance(result, list)
        return result

    def wait_no_kernels(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        running = self.kernels()
        while running and time.monotonic() < deadline:
            time.sleep(0.2)
            running = self.kernels()
        return running


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    # Reads stdout until EOF, so the child never blocks on a full pipe.
    for line in stream:
        lines.put(line)
    lines.put(None)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def envsync_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ENVSYNC_HOME for the session, so the env is built once."""
    return tmp_path_factory.mktemp("envsync-home")


def start_launch(
    notebook: Path, *, home: Path, origin: str, workdir: Path, extra: tuple[str, ...] = ()
) -> Launched:
    """Run `envsync launch NOTEBOOK --json --allow-origin ORIGIN --port <free> EXTRA...` until ready."""
    log = workdir / f"envsync-launch-{notebook.stem}.stderr.log"
    env = {**os.environ, "ENVSYNC_HOME": str(home)}
    env.pop("ENVSYNC_TOKEN", None)  # a fresh random token
    argv = [
        sys.executable,
        "-m",
        "envsync",
        "launch",
        str(notebook),
        "--json",
        "--allow-origin",
        origin,
        "--port",
        str(free_port()),
        *extra,
    ]
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()

    info: dict[str, Any] | None = None
    seen: list[str] = []
    deadline = time.monotonic() + FIRST_BUILD_TIMEOUT
    while info is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop_process(process, signal.SIGINT, timeout=10)
            pytest.fail(
                f"envsync launch printed no JSON line in {FIRST_BUILD_TIMEOUT:.0f} s\n"
                f"stdout: {''.join(seen)}\nstderr:\n{_tail(log)}",
                pytrace=False,
            )
        try:
            line = lines.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
        if line is None:
            code = process.wait(timeout=10)
            pytest.fail(
                f"envsync launch exited ({code}) before it was ready\nstdout: {''.join(seen)}\n"
                f"stderr:\n{_tail(log)}",
                pytrace=False,
            )
        seen.append(line)
        if line.lstrip().startswith("{"):
            try:
                candidate = json.loads(line)
            except ValueError:
                continue
            if isinstance(candidate, dict) and "url" in candidate and "token" in candidate:
                info = candidate
    return Launched(info=info, home=home, notebook=notebook, process=process, log=log)


def end_launch(running: Launched) -> None:
    """SIGINT to `envsync launch` by PID; the gateway and its kernels must be gone after it."""
    gateway_pid = running.gateway_pid
    kernel_pids = descendants(gateway_pid)
    code = stop_process(running.process, signal.SIGINT)
    left = wait_gone([gateway_pid, *kernel_pids], timeout=10.0)
    kill_pids(left)  # never leave anything behind, even when the assertion below fails
    assert not left, f"still running after envsync launch stopped: {left}\n{_tail(running.log)}"
    assert code in (0, 130), f"envsync launch exited {code} on SIGINT\n{_tail(running.log)}"


@pytest.fixture(scope="session")
def launcher() -> Callable[..., contextlib.AbstractContextManager[Launched]]:
    """`launcher(notebook, home, origin, workdir, extra)`: a launch that ends on leaving the block."""

    @contextlib.contextmanager
    def launch(
        notebook: Path, home: Path, origin: str, workdir: Path, extra: tuple[str, ...] = ()
    ) -> Iterator[Launched]:
        running = start_launch(notebook, home=home, origin=origin, workdir=workdir, extra=extra)
        try:
            yield running
        finally:
            end_launch(running)

    return launch


@pytest.fixture(scope="session")
def launched(
    client_site: StaticSite, envsync_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launched]:
    """`envsync launch quickstart.ipynb --json --allow-origin <client_site> --port <free>`."""
    workdir = tmp_path_factory.mktemp("launch")
    notebook = workdir / QUICKSTART.name
    shutil.copyfile(QUICKSTART, notebook)
    running = start_launch(notebook, home=envsync_home, origin=client_site.origin, workdir=workdir)
    try:
        yield running
    finally:
        end_launch(running)


# --- jupyter server in front of the gateway ------------------------------------------

SERVER_READY_TIMEOUT = 60.0


@dataclass
class JupyterServer:
    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture
def jupyter_server(launched, tmp_path: Path) -> Iterator[JupyterServer]:
    """A jupyter server whose kernels all come from the envsync gateway."""
    root = tmp_path / "root"
    root.mkdir()
    jupyter_dirs = tmp_path / "jupyter"
    token = uuid.uuid4().hex
    port = free_port()
    # Tokens through the environment (JUPYTER_TOKEN for this server, JUPYTER_GATEWAY_AUTH_TOKEN
    # for the gateway it calls): argv would show them in `ps`. Jupyter's own dirs are private
    # so nothing from this machine's Jupyter setup leaks in.
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_GATEWAY_AUTH_TOKEN": launched.token,
        "JUPYTER_CONFIG_DIR": str(jupyter_dirs / "config"),
        "JUPYTER_DATA_DIR": str(jupyter_dirs / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter_dirs / "runtime"),
    }
    for name in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_GATEWAY_URL"):
        env.pop(name, None)
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--gateway-url={launched.url}",
        "--ServerApp.ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--no-browser",
        "--allow-root",
    ]
    log = tmp_path / "jupyter-server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = JupyterServer(f"http://127.0.0.1:{port}", token, root, process, log)
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"jupyter server exited ({process.returncode}):\n{server.log_tail()}", pytrace=False
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter server not ready in {SERVER_READY_TIMEOUT} s:\n{server.log_tail()}",
                    pytrace=False,
                )
            try:
                if server.request("GET", "/api/status").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        yield server
    finally:
        children = descendants(process.pid)
        # SIGTERM: jupyter server's documented stop (SIGINT asks for confirmation on a terminal).
        stop_process(process, signal.SIGTERM)
        left = wait_gone([process.pid, *children], timeout=10.0)
        kill_pids(left)
        assert not left, f"still running after jupyter server stopped: {left}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- the browser client page -----------------------------------------------------------


def _client_url(origin: str, **params: str) -> str:
    return f"{origin}/index.html#{urlencode(params)}"


@pytest.fixture(scope="session")
def client_url() -> Callable[..., str]:
    """The example page on an origin, its parameters in the #fragment (never sent to a server)."""
    return _client_url


@pytest.fixture(scope="session")
def open_client(browser: str, run_node: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Open the page in Chromium through browser_check.mjs (flags such as --public); its report."""

    def open_page(
        url: str, *flags: str, screenshot: Path | None = None, timeout_ms: int = 90000
    ) -> dict[str, Any]:
        args = ["--timeout-ms", str(timeout_ms), *flags]
        if screenshot is not None:
            screenshot.unlink(missing_ok=True)
            args += ["--screenshot", str(screenshot)]
        # Each wait (run, send lock, run again) has its own deadline.
        budget = 3 * timeout_ms / 1000 + 60
        report = run_node("browser_check.mjs", *args, env={"ENVSYNC_PAGE_URL": url}, timeout=budget)
        assert report["_returncode"] == 0, f"the page reached no final state: {report}"
        return report

    return open_page
