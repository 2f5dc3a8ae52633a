"""The editor API of `envsync launch` (`/api/envsync*`) as a web editor meets it: real launches,
real gateways, real kernels.

The module's own index (tests/wheelhouse.py) serves `alpha` 1.0.0 and 1.1.0 and an
`ipykernel` whose `ipykernel_launcher` runs this interpreter's real ipykernel, so a kernel
in an env of the local index starts offline and imports the env's `alpha`. Every answer is
checked against its JSON Schema in schemas/.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from envsync.notebook.file import splice_manifest
from tests.manifests import manifest_of, refresh_fingerprint, tamper_first_hash
from tests.support.gated_index import GatedIndex
from tests.support.gateway_client import connect, execute
from tests.support.processes import alive, children_of, free_port, run_envsync
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "https://editor.example"
FOREIGN = "https://evil.example"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 120.0
BUILD_TIMEOUT = 120.0
SCHEMAS = {
    name: json.loads((ROOT / "schemas" / f"editor-api-{name}-v1.schema.json").read_text())
    for name in ("envsync", "diff", "lock", "error")
}
# The stand-in kernel package: this interpreter's ipykernel, the env's own packages first.
BRIDGE = (
    "import sys\n"
    f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
    "from ipykernel import kernelapp\n"
    "kernelapp.launch_new_instance()\n"
)


def valid(kind: str, data: Any) -> Any:
    jsonschema.validate(data, SCHEMAS[kind], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return data


def refused(r: requests.Response, status: int) -> str:
    """The one-line message of an error answer with `status`, its body held to the error schema."""
    assert r.status_code == status, (r.status_code, r.text)
    body = valid("error", r.json())
    assert "\n" not in body["message"]
    return str(body["message"])


# --- processes -------------------------------------------------------------------------------


def cli_env(home: Path, index_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "ENVSYNC_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    env["ENVSYNC_HOME"] = str(home)
    env["ENVSYNC_ALLOWED_INDEXES"] = index_url
    return env


def envsync(env: dict[str, str], *argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_envsync(env, *argv, cwd=cwd, timeout=CLI_TIMEOUT)


class Launch:
    """`envsync launch NB --json` with stdin a pipe (for the consent answer), output drained by threads."""

    def __init__(self, nb: Path, env: dict[str, str], *extra: str) -> None:
        argv = [str(nb), "--json", "--port", str(free_port()), "--allow-origin", ORIGIN, *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "envsync", "launch", *argv],
            env=env,
            cwd=nb.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._out: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(i,), daemon=True) for i in (1, 2)]
        for t in self._threads:
            t.start()
        self.info = self.next_json(READY_TIMEOUT)
        self.url, self.token, self.pid = self.info["url"], self.info["token"], self.info["pid"]

    def _pump(self, which: int) -> None:
        stream = self.proc.stdout if which == 1 else self.proc.stderr
        assert stream is not None
        for line in stream:
            if which == 1:
                self._out.put(line)
            else:
                self._err.append(line)
        if which == 1:
            self._out.put(None)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def next_json(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._out.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"launch ended (exit {self.proc.wait(10)}); stderr:\n{self.stderr}")
            if line.strip():
                return dict(json.loads(line))
        raise AssertionError(f"no JSON line within {timeout:.0f} s; stderr:\n{self.stderr}")

    def drain(self) -> list[dict[str, Any]]:
        """Every JSON line already printed and not read yet."""
        out = []
        while True:
            try:
                line = self._out.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                self._out.put(None)
                return out
            if line.strip():
                out.append(json.loads(line))

    def event(self, name: str, timeout: float = BUILD_TIMEOUT) -> dict[str, Any]:
        """The next JSON event called `name` on stdout (others before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.next_json(max(0.1, deadline - time.monotonic()))
            if found.get("event") == name:
                return found

    def answer(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"token {self.token}", **extra}

    def get(self, path: str = "/api/envsync", **kw: Any) -> requests.Response:
        return requests.get(self.url + path, headers=kw.pop("headers", self.headers()), timeout=30, **kw)

    def post(self, path: str, body: Any, timeout: float = 200.0) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers(), timeout=timeout)

    def state(self) -> dict[str, Any]:
        r = self.get()
        assert r.status_code == 200, r.text
        return dict(valid("envsync", r.json()))

    def wait_state(self, state: str, timeout: float = BUILD_TIMEOUT) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []
        assert wait_until(lambda: seen.append(self.state()) or seen[-1]["state"] == state, timeout), seen[-3:]
        return seen[-1]

    def stop(self) -> int:
        """SIGINT, exit code; the gateway and its kernels are gone afterwards."""
        kernels = children_of(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        for pid in [self.pid, *kernels]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for t in self._threads:
            t.join(timeout=5)
        return code


@contextlib.contextmanager
def launching(nb: Path, env: dict[str, str], *extra: str) -> Iterator[Launch]:
    launch = Launch(nb, env, *extra)
    try:
        yield launch
    finally:
        code = launch.stop()
        assert code == 0, launch.stderr
        assert not alive(launch.pid)


def start_kernel(launch: Launch) -> str:
    r = requests.post(f"{launch.url}/api/kernels", json={}, headers=launch.headers(), timeout=60)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def alpha_in(launch: Launch, kernel_id: str) -> str:
    ws = connect(launch, kernel_id)
    try:
        return execute(ws, "import alpha; print(alpha.__version__)").strip()
    finally:
        ws.close()


def kernels_by_id(state: dict[str, Any]) -> dict[str, str]:
    return {k["id"]: k["fingerprint"] for k in state["kernels"]}


def envs_of(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "envs").iterdir() if not p.name.startswith("."))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    index = LocalIndex(tmp_path_factory.mktemp("editor-index"))
    index.add("ipykernel", "6.0.0", files={"ipykernel_launcher.py": BRIDGE})
    index.add("alpha", "1.0.0")
    index.add("alpha", "1.1.0")
    yield index.start()
    index.stop()


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory, kernel_index: LocalIndex) -> tuple[Path, dict[str, Any]]:
    """A notebook locked with alpha 1.1.0, and the editor's manifest of the same project with alpha 1.0.0."""
    folder = tmp_path_factory.mktemp("editor-notebooks")
    env = cli_env(folder / "home", kernel_index.url)
    served = folder / "nb.ipynb"
    res = envsync(env, "init", served, "--index", kernel_index.url, "--python", "3.11", "--project", "sales", "alpha<2")
    assert res.returncode == 0, res.stderr
    edited = folder / "edited.ipynb"
    shutil.copyfile(served, edited)
    res = envsync(env, "add", edited, "alpha==1.0.0")
    assert res.returncode == 0, res.stderr
    return served, manifest_of(edited)


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("editor-home") / "home"


@pytest.fixture
def nb(tmp_path: Path, notebooks: tuple[Path, dict[str, Any]]) -> Path:
    path = tmp_path / "nb.ipynb"
    shutil.copyfile(notebooks[0], path)
    return path


@pytest.fixture
def theirs(notebooks: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return json.loads(json.dumps(notebooks[1]))


@pytest.fixture
def env(shared_home: Path, kernel_index: LocalIndex) -> dict[str, str]:
    return cli_env(shared_home, kernel_index.url)


@pytest.fixture
def own_home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def own_env(own_home: Path, kernel_index: LocalIndex) -> dict[str, str]:
    return cli_env(own_home, kernel_index.url)


# --- reading ---------------------------------------------------------------------------------


def test_state_names_the_served_lock_env_and_check_and_needs_the_token(nb: Path, env: dict[str, str]) -> None:
    served = manifest_of(nb)
    with launching(nb, env, "--lock-updates", "accept") as launch:
        assert launch.info["connection"] == f"{launch.url}/#token={launch.token}"
        assert "?" not in launch.info["connection"]
        refused(launch.get(headers={}), 401)
        refused(launch.get(headers={"Authorization": "token " + "x" * 43}), 401)
        refused(launch.get(params={"token": launch.token}, headers={}), 401)  # never in a query
        assert launch.get(headers=launch.headers(Host="evil.example")).status_code == 403  # DNS rebinding

        state = launch.state()

    assert state["project"] == "sales"
    assert state["fingerprint"] == served["lock"]["tool"]["envsync"]["fingerprint"] == launch.info["fingerprint"]
    assert state["python"] == launch.info["python"] and state["python"].startswith("3.11.")
    assert {"name": "alpha", "version": "1.1.0"} in state["packages"]
    assert state["state"] == "ready" and state["progress"] is None and state["error"] is None
    assert state["kernels"] == []
    assert state["lock-updates"] == "accept"
    check = state["verification"]
    assert check["clean"] is True and check["mode"] == "fast" and check["files"] == []


def test_the_ready_line_carries_one_connection_string_with_the_token_in_the_fragment(
    nb: Path, env: dict[str, str]
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "envsync", "launch", str(nb), "--port", str(port)],
        env=env,
        cwd=nb.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not any(ln.startswith("Editor connection:") for ln in lines):
            lines.append(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=STOP_TIMEOUT)
    ready = next(ln for ln in lines if ln.startswith("Kernel Gateway ready:"))
    token = ready.split("token: ")[1].strip()
    connection = next(ln for ln in lines if ln.startswith("Editor connection:"))
    assert connection.strip() == f"Editor connection: http://127.0.0.1:{port}/#token={token}"


def test_diff_is_the_one_envsync_diff_computes_and_changes_nothing(
    nb: Path, env: dict[str, str], theirs: dict[str, Any], tmp_path: Path
) -> None:
    edited = tmp_path / "edited.ipynb"
    shutil.copyfile(nb, edited)
    edited.write_text(splice_manifest(edited.read_text(), theirs))
    cli = envsync(env, "diff", nb, edited, "--json")
    assert cli.returncode in (0, 1), cli.stderr
    before = nb.read_bytes()
    with launching(nb, env, "--lock-updates", "accept") as launch:
        fingerprint = launch.state()["fingerprint"]
        r = launch.post("/api/envsync/diff", {"manifest": theirs})
        assert r.status_code == 200, r.text
        body = valid("diff", r.json())
        same = valid("diff", launch.post("/api/envsync/diff", {"manifest": manifest_of(nb)}).json())
        assert launch.state()["fingerprint"] == fingerprint
    assert body["diff"] == json.loads(cli.stdout)
    assert body["same"] is False
    assert [(c["name"], c["kind"], c["old"], c["new"]) for c in body["diff"]["changes"]] == [
        ("alpha", "downgraded", "1.1.0", "1.0.0")
    ]
    assert same["same"] is True and same["diff"]["changes"] == []
    assert nb.read_bytes() == before


# --- an update from the editor ------------------------------------------------------------------


def test_accepted_lock_is_built_then_served_to_new_and_restarted_kernels_and_saved_in_the_notebook(
    nb: Path, env: dict[str, str], theirs: dict[str, Any]
) -> None:
    before = nb.read_bytes()
    old_fp = manifest_of(nb)["lock"]["tool"]["envsync"]["fingerprint"]
    new_fp = theirs["lock"]["tool"]["envsync"]["fingerprint"]
    with launching(nb, env, "--lock-updates", "accept") as launch:
        old_kernel = start_kernel(launch)
        assert alpha_in(launch, old_kernel) == "1.1.0"
        kept = start_kernel(launch)

        r = launch.post("/api/envsync/lock", {"manifest": theirs})
        assert r.status_code == 202, r.text
        assert valid("lock", r.json()) == {"state": "building", "fingerprint": new_fp}
        started = launch.event("lock-update-started")
        assert started["fingerprint"] == new_fp
        state = launch.wait_state("ready")
        assert state["fingerprint"] == new_fp, state
        assert {"name": "alpha", "version": "1.0.0"} in state["packages"]
        assert state["verification"]["clean"] is True
        status = envsync(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert [g["fingerprint"] for g in json.loads(status.stdout) if g["pid"] == launch.pid] == [new_fp]

        new_kernel = start_kernel(launch)
        assert alpha_in(launch, new_kernel) == "1.0.0"
        assert alpha_in(launch, old_kernel) == "1.1.0"
        listed = kernels_by_id(launch.state())
        assert listed == {old_kernel: old_fp, kept: old_fp, new_kernel: new_fp}

        r = requests.post(f"{launch.url}/api/kernels/{old_kernel}/restart", headers=launch.headers(), timeout=60)
        assert r.status_code == 200, r.text
        assert alpha_in(launch, old_kernel) == "1.0.0"
        assert kernels_by_id(launch.state())[old_kernel] == new_fp
        assert kernels_by_id(launch.state())[kept] == old_fp
        time.sleep(1.5)  # the watcher looks at the notebook twice a second
        events = [e.get("event") for e in launch.drain()]
        assert "lock-update-ready" in events and "lock-changed" not in events, events

    after = nb.read_bytes()
    assert manifest_of(nb) == theirs
    # Every byte but metadata.envsync is what it was.
    assert after.decode() == splice_manifest(before.decode(), manifest_of(nb))
    res = envsync(env, "lock", nb, "--check")
    assert res.returncode == 0, res.stderr


def test_refused_by_default_without_a_terminal(nb: Path, env: dict[str, str], theirs: dict[str, Any]) -> None:
    before = nb.read_bytes()
    with launching(nb, env) as launch:
        state = launch.state()
        assert state["lock-updates"] == "refuse"
        message = refused(launch.post("/api/envsync/lock", {"manifest": theirs}), 403)
        assert "refuse" in message
        assert launch.state()["fingerprint"] == state["fingerprint"]
    assert nb.read_bytes() == before


def test_ask_waits_for_the_terminal_answer_no_then_yes(nb: Path, env: dict[str, str], theirs: dict[str, Any]) -> None:
    before = nb.read_bytes()
    new_fp = theirs["lock"]["tool"]["envsync"]["fingerprint"]
    answers: queue.Queue[requests.Response] = queue.Queue()

    def post_lock(launch: Launch) -> threading.Thread:
        t = threading.Thread(target=lambda: answers.put(launch.post("/api/envsync/lock", {"manifest": theirs})))
        t.start()
        return t

    with launching(nb, env, "--lock-updates", "ask") as launch:
        assert launch.state()["lock-updates"] == "ask"
        waiting = post_lock(launch)
        asked = launch.event("lock-update-asked")
        assert [c["name"] for c in asked["diff"]["changes"]] == ["alpha"]
        # While one update waits for its answer, another is turned away.
        assert "under way" in refused(launch.post("/api/envsync/lock", {"manifest": theirs}), 409)
        launch.answer("n\n")
        waiting.join(60)
        assert "declined" in refused(answers.get(timeout=5), 403)
        assert nb.read_bytes() == before

        waiting = post_lock(launch)
        launch.event("lock-update-asked")
        launch.answer("y\n")
        waiting.join(60)
        r = answers.get(timeout=5)
        assert r.status_code == 202, r.text
        assert valid("lock", r.json())["fingerprint"] == new_fp
        assert launch.wait_state("ready")["fingerprint"] == new_fp
    assert manifest_of(nb) == theirs
    assert "serve this lock from now on? [y/N]" in launch.stderr


def test_a_build_shows_progress_turns_a_second_update_away_and_a_failure_keeps_the_old_env(
    tmp_path: Path, kernel_index: LocalIndex
) -> None:
    index = GatedIndex(kernel_index.root)
    try:
        env = {**cli_env(tmp_path / "home", index.url), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
        nb = tmp_path / "nb.ipynb"
        res = envsync(env, "init", nb, "--index", index.url, "--python", "3.11", "--project", "sales", "alpha<2")
        assert res.returncode == 0, res.stderr
        edited = tmp_path / "edited.ipynb"
        shutil.copyfile(nb, edited)
        assert envsync(env, "add", edited, "alpha==1.0.0").returncode == 0
        theirs = manifest_of(edited)
        before = nb.read_bytes()
        with launching(nb, env, "--lock-updates", "accept") as launch:
            served = launch.state()["fingerprint"]
            index.armed, index.fail = True, True  # alpha 1.0.0 is not in the private uv cache yet
            r = launch.post("/api/envsync/lock", {"manifest": theirs})
            assert r.status_code == 202, r.text
            assert index.requested.wait(60), launch.stderr
            building = launch.state()
            assert building["state"] == "building" and building["fingerprint"] == served
            assert building["progress"] is not None and building["progress"]["message"]
            message = refused(launch.post("/api/envsync/lock", {"manifest": theirs}), 409)
            assert "under way" in message
            index.release.set()

            failed = launch.wait_state("failed")
            assert failed["fingerprint"] == served and failed["error"], failed
            assert launch.event("lock-update-failed")["error"] == failed["error"]
            assert nb.read_bytes() == before
            kernel = start_kernel(launch)  # the old env still serves
            assert kernels_by_id(launch.state()) == {kernel: served}
    finally:
        index.stop()


# --- what is refused ---------------------------------------------------------------------------


def hostile(theirs: dict[str, Any], served: dict[str, Any]) -> dict[str, tuple[Any, int, str]]:
    """Bodies an editor (or a page that stole the token) might send: (body, status, words in the message)."""
    def edited(change: Any) -> dict[str, Any]:
        m = json.loads(json.dumps(theirs))
        change(m)
        return {"manifest": m}

    def url_dependency(m: dict[str, Any]) -> None:
        m["dependencies"] = ["alpha @ https://evil.example/alpha-1.0.0-py3-none-any.whl"]

    def foreign_index(m: dict[str, Any]) -> None:
        m["index"] = "https://evil.example/simple"
        for p in m["lock"]["packages"]:
            p["index"] = "https://evil.example/simple"
        refresh_fingerprint(m)

    def tampered(m: dict[str, Any]) -> None:
        m["lock"]["tool"]["envsync"]["fingerprint"] = "sha256:" + "0" * 64

    def no_lock(m: dict[str, Any]) -> None:
        del m["lock"]

    def stale(m: dict[str, Any]) -> None:
        m["dependencies"] = [*m["dependencies"], "beta"]

    def other_project(m: dict[str, Any]) -> None:
        m["project"] = "payroll"

    rehashed = json.loads(json.dumps(served))
    tamper_first_hash(rehashed, "alpha")
    refresh_fingerprint(rehashed)

    return {
        "same version, other hashes": ({"manifest": rehashed}, 403, "other file hashes"),
        "url dependency": (edited(url_dependency), 400, "alpha"),
        "index not allowed": (edited(foreign_index), 400, "not allowed"),
        "tampered fingerprint": (edited(tampered), 400, "fingerprint"),
        "no lock": (edited(no_lock), 400, "no lock"),
        "stale lock": (edited(stale), 400, "stale"),
        "foreign project": (edited(other_project), 409, "payroll"),
        "not a manifest": ({"manifest": {"project": "sales"}}, 400, ""),
        "no manifest key": ({"lock": {}}, 400, "manifest"),
    }


def test_hostile_or_foreign_manifests_are_refused_and_nothing_changes(
    nb: Path, own_env: dict[str, str], own_home: Path, theirs: dict[str, Any]
) -> None:
    before = nb.read_bytes()
    with launching(nb, own_env, "--lock-updates", "accept") as launch:
        envs = envs_of(own_home)
        fingerprint = launch.state()["fingerprint"]
        for name, (body, status, words) in hostile(theirs, manifest_of(nb)).items():
            message = refused(launch.post("/api/envsync/lock", body), status)
            assert words in message, (name, message)
            if name != "foreign project":
                diffed = launch.post("/api/envsync/diff", body)
                assert diffed.status_code in (200, 400), (name, diffed.text)
        r = requests.post(
            f"{launch.url}/api/envsync/lock", data=b"{not json", headers=launch.headers(), timeout=30
        )
        assert "not JSON" in refused(r, 400)
        state = launch.state()
        assert state["fingerprint"] == fingerprint and state["state"] == "ready"
        assert envs_of(own_home) == envs
    assert nb.read_bytes() == before


def test_a_tampered_env_file_shows_in_the_check_and_no_kernel_starts(
    nb: Path, own_env: dict[str, str]
) -> None:
    with launching(nb, own_env) as launch:
        env = Path(launch.info["env"])
        module = next(env.glob("lib/python*/site-packages/alpha/__init__.py"))
        module.write_text(module.read_text() + "print('pwned')\n")

        r = requests.post(f"{launch.url}/api/kernels", json={}, headers=launch.headers(), timeout=60)
        message = refused(r, 409)
        assert "files differ" in message and "alpha" in message
        check = launch.state()["verification"]
        assert check["clean"] is False
        assert check["files"] == [
            {"distribution": "alpha", "path": str(module.relative_to(env)), "problem": "modified"}
        ]
        assert launch.state()["kernels"] == []
        assert children_of(launch.pid) == []


# --- CORS ------------------------------------------------------------------------------------


def preflight(launch: Launch, path: str, origin: str) -> requests.Response:
    return requests.options(
        launch.url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
            "Access-Control-Request-Private-Network": "true",
        },
        timeout=30,
    )


def test_private_network_preflight_is_allowed_for_the_editor_origin_only(nb: Path, env: dict[str, str]) -> None:
    with launching(nb, env) as launch:
        for path in ("/api/envsync/lock", "/api/envsync", "/api/kernels"):
            ok = preflight(launch, path, ORIGIN)
            assert ok.status_code in (200, 204), (path, ok.status_code)
            assert ok.headers.get("Access-Control-Allow-Private-Network") == "true", path
            assert ok.headers.get("Access-Control-Allow-Origin") == ORIGIN, path
            other = preflight(launch, path, FOREIGN)
            assert not [h for h in other.headers if h.lower().startswith("access-control-")], (path, other.headers)
        got = launch.get(headers=launch.headers(Origin=ORIGIN))
        assert got.headers.get("Access-Control-Allow-Origin") == ORIGIN
        assert "Access-Control-Allow-Private-Network" not in got.headers
        got = launch.get(headers=launch.headers(Origin=FOREIGN))
        assert "Access-Control-Allow-Origin" not in got.headers


# --- the control socket ------------------------------------------------------------------------


def test_the_control_socket_is_private_and_survives_a_malformed_request() -> None:
    import socket
    import stat

    from envsync.gateway import control

    server = control.ControlServer(lambda request: (200, {"echo": request.get("op")}))
    try:
        assert stat.S_IMODE(server.folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(server.path))
            sock.sendall(b"[not an object")
            sock.shutdown(socket.SHUT_WR)
            answer = json.loads(sock.recv(65536))
        assert answer == {"status": 400, "body": {"message": "malformed control request"}}
        assert control.ask(server.path, {"op": "state"}, timeout=10) == (200, {"echo": "state"})
    finally:
        server.close()
    assert not server.folder.exists()


# --- consent, in-process ----------------------------------------------------------------------


def test_consent_unanswered_in_time_is_a_refusal_and_an_answer_from_the_hook_starts_the_build(
    nb: Path, own_env: dict[str, str], own_home: Path, theirs: dict[str, Any], kernel_index: LocalIndex
) -> None:
    from envsync.ops import project
    from envsync.ops.consent import LockUpdateAsked, LockUpdateReady, LockUpdates
    from envsync.ops.editor import EditorControl
    from envsync.ops.sync import sync
    from envsync.settings import Settings

    settings = Settings(home=own_home, allowed_indexes=(kernel_index.url,))
    lock = project.lock_of(project.load(nb))
    result = sync(lock=lock, project="sales", notebook=nb, settings=settings)
    editor = EditorControl.serving(
        settings=settings,
        notebook=nb,
        project="sales",
        kernel_name=result.kernel_name,
        lock=lock,
        env=result.env,
        checked=result.drift,
        policy=LockUpdates.ASK,
        backend=None,
    )
    editor.consent_timeout = 0.3
    before = nb.read_bytes()
    try:
        status, body = editor.handle({"op": "lock", "manifest": theirs})
        assert status == 403 and "within" in body["message"], body
        asked = [e for e in editor.events() if isinstance(e, LockUpdateAsked)]
        assert len(asked) == 1 and asked[0].request.wait() is False  # a late answer changes nothing
        assert nb.read_bytes() == before and editor.state_body()["state"] == "ready"

        editor.consent_timeout = 30.0
        answers: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        t = threading.Thread(target=lambda: answers.put(editor.handle({"op": "lock", "manifest": theirs})))
        t.start()
        def answer_yes() -> bool:
            pending = [e for e in editor.events() if isinstance(e, LockUpdateAsked)]
            for event in pending:
                event.request.answer(True)  # what the CLI does when the user types y
            return bool(pending)

        assert wait_until(answer_yes, 10)
        t.join(30)
        status, body = answers.get(timeout=5)
        assert status == 202, body
        served = body["fingerprint"]
        # The build thread switches the served env, records the run, then reports ready.
        assert wait_until(lambda: editor.state_body()["state"] == "ready", BUILD_TIMEOUT)
        assert editor.state_body()["fingerprint"] == served
        assert any(isinstance(e, LockUpdateReady) for e in editor.events())
        assert manifest_of(nb) == theirs
    finally:
        editor.close()
