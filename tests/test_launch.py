"""`envsync launch`, `status` and `stop` as a user runs them: real subprocesses, real gateways.

Every launch runs `python -m envsync launch NB --json --port P` in a subprocess, reads the
ready line with a deadline, checks what a user would see, then ends the process by its PID
and proves the gateway (and any kernel) is gone. The offline tests use the session's local
index (tests/wheelhouse.py, a stand-in ipykernel: the gateway starts, no kernel does unless a
client asks); the one network test serves the quick-start notebook from PyPI and talks to a
real kernel over REST and WebSocket.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from envsync import proc
from envsync.env import inventory, store
from envsync.settings import Settings
from tests.manifests import (
    edit_manifest,
    locked_versions,
    manifest_of,
    refresh_fingerprint,
    tamper_first_hash,
)
from tests.support.gated_index import GatedIndex
from tests.support.gateway_client import execute
from tests.support.processes import REPO, alive, children_of, free_port, run_envsync
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

VENV_BIN = Path(sys.executable).parent
UV = shutil.which("uv", path=str(VENV_BIN)) or "uv"
ORIGIN = "https://editor.example"
FOREIGN = "https://evil.example"
READY_TIMEOUT = 90.0  # a launch on the local index is ready in about a second
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 120.0


# --- processes -------------------------------------------------------------------------------


def cli_env(home: Path, index_url: str | None, **extra: str) -> dict[str, str]:
    """The environment a user's shell would give envsync: a private home, the index allowed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "ENVSYNC_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    env["ENVSYNC_HOME"] = str(home)
    if index_url:
        env["ENVSYNC_ALLOWED_INDEXES"] = index_url
    env.update(extra)
    return env


def envsync(env: dict[str, str], *argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_envsync(env, *argv, cwd=cwd, timeout=CLI_TIMEOUT)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("ERROR")]


def warning_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("WARNING")]


class Launch:
    """One `envsync launch ... --json` subprocess with its output drained by threads."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "envsync", "launch", *argv],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, Any] | None = None
        self._out: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump_out, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.put(line)
        self._out.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def next_json(self, timeout: float) -> Any:
        """The next JSON line on stdout, or None once stdout is closed (the process ended)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no JSON line on stdout within {timeout:.0f} s; stderr:\n{self.stderr}")
            try:
                line = self._out.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._out.put(None)  # later calls see the end too
                return None
            if line.strip():
                return json.loads(line)

    def ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        info = self.next_json(timeout)
        if info is None:
            code = self.wait()
            raise AssertionError(f"launch ended (exit {code}) before it was ready; stderr:\n{self.stderr}")
        self.info = info
        return info

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        code = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return code

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Signal the envsync process, wait for it, and prove the gateway went with it."""
        self.proc.send_signal(sig)
        code = self.wait()
        if self.info is not None:
            assert wait_until(lambda: not alive(self.info["pid"]), 5.0), "the gateway outlived envsync"
        return code

    def cleanup(self) -> None:
        """End whatever is left, by PID: the envsync process, then the gateway and its kernels."""
        gw = self.info["pid"] if self.info else None
        kernels = children_of(gw) if gw and alive(gw) else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in [p for p in (gw, *kernels) if p]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for t in self._threads:
            t.join(timeout=5)


@contextlib.contextmanager
def launching(nb: Path, env: dict[str, str], *extra: str, port: int | None = None) -> Iterator[Launch]:
    argv = [str(nb), "--json", "--port", str(port or free_port()), *extra]
    launch = Launch(argv, env, cwd=nb.parent)
    try:
        yield launch
    finally:
        launch.cleanup()


def launch_once(nb: Path, env: dict[str, str], *extra: str) -> tuple[int, str, str]:
    """A launch expected to end by itself (an error before it serves): exit code, stdout, stderr."""
    res = subprocess.run(
        [sys.executable, "-m", "envsync", "launch", str(nb), "--json", *extra],
        env=env,
        cwd=nb.parent,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    return res.returncode, res.stdout, res.stderr


def serve_and_stop(nb: Path, env: dict[str, str], *extra: str) -> tuple[dict[str, Any], str]:
    """Launch until ready, stop with SIGINT (exit 0, gateway gone); the JSON line and stderr."""
    with launching(nb, env, *extra) as launch:
        info = launch.ready()
        assert launch.stop() == 0, launch.stderr
        return info, launch.stderr


def api_status(info: dict[str, Any], token: str | None = None) -> int:
    headers = {"Authorization": f"token {token or info['token']}"}
    return requests.get(f"{info['url']}/api", headers=headers, timeout=10).status_code


# --- notebooks -------------------------------------------------------------------------------


def write_plain_notebook(path: Path, first_code: str | None = None) -> Path:
    cells: list[dict[str, Any]] = [
        {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# analysis"},
    ]
    if first_code is not None:
        cells.append(
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "c1",
                "metadata": {},
                "outputs": [],
                "source": first_code,
            }
        )
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")
    return path


def nothing_built(home: Path) -> bool:
    envs = home / "envs"
    return not envs.exists() or not any(envs.iterdir())


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_notebook(tmp_path_factory: pytest.TempPathFactory, local_index: LocalIndex) -> Path:
    """`nb.ipynb` locked on the local index with `alpha<2` (alpha 1.1.0), made once per module."""
    folder = tmp_path_factory.mktemp("launch-base")
    path = folder / "nb.ipynb"
    res = envsync(
        cli_env(folder / "home", local_index.url),
        "init",
        path,
        "--index",
        local_index.url,
        "--python",
        "3.11",
        "alpha<2",
    )
    assert res.returncode == 0, res.stderr
    assert locked_versions(path)["alpha"] == "1.1.0"
    return path


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ENVSYNC_HOME (and so one built env) for the tests that do not depend on history."""
    return tmp_path_factory.mktemp("launch-home") / "home"


@pytest.fixture
def nb(tmp_path: Path, base_notebook: Path) -> Path:
    path = tmp_path / "nb.ipynb"
    shutil.copyfile(base_notebook, path)
    return path


@pytest.fixture
def env(shared_home: Path, local_index: LocalIndex) -> dict[str, str]:
    """The module's shared home: the env is built by the first test that launches."""
    return cli_env(shared_home, local_index.url)


@pytest.fixture
def own_home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def own_env(own_home: Path, local_index: LocalIndex) -> dict[str, str]:
    """A private home: no history, no env, no gateway but this test's."""
    return cli_env(own_home, local_index.url)


# --- no manifest -----------------------------------------------------------------------------


def test_launch_without_manifest_exits_1_with_an_envsync_init_hint(
    tmp_path: Path, own_env: dict[str, str]
) -> None:
    plain = write_plain_notebook(tmp_path / "plain.ipynb", "print(1)")
    before = plain.read_bytes()
    code, out, err = launch_once(plain, own_env)
    assert code == 1, err
    assert out == ""
    errors = error_lines(err)
    assert len(errors) == 1 and "has no envsync manifest" in errors[0], err
    assert str(plain) in errors[0]
    hint = [ln for ln in err.splitlines() if ln.startswith("hint:")]
    assert hint and "envsync init" in hint[0], err
    assert plain.read_bytes() == before


def test_launch_on_a_juv_notebook_hints_envsync_import(tmp_path: Path, own_env: dict[str, str]) -> None:
    juv = write_plain_notebook(
        tmp_path / "juv.ipynb",
        '# /// script\n# requires-python = ">=3.11"\n# dependencies = ["alpha"]\n# ///\nimport alpha\n',
    )
    before = juv.read_bytes()
    code, out, err = launch_once(juv, own_env)
    assert code == 1, err
    assert out == ""
    errors = error_lines(err)
    assert len(errors) == 1 and "no envsync manifest" in errors[0], err
    hint = [ln for ln in err.splitlines() if ln.startswith("hint:")]
    assert hint and "envsync import" in hint[0] and "envsync init" not in hint[0], err
    assert juv.read_bytes() == before


# --- stale lock ------------------------------------------------------------------------------


def declare_beta(m: dict[str, Any]) -> None:
    m["dependencies"] = [*m["dependencies"], "beta"]


def test_stale_lock_is_relocked_with_a_warning_and_then_served(nb: Path, own_env: dict[str, str]) -> None:
    edit_manifest(nb, declare_beta)
    assert "beta" not in locked_versions(nb)

    info, err = serve_and_stop(nb, own_env)

    stale = [ln for ln in warning_lines(err) if "stale" in ln]
    assert stale, err
    assert "re-locked" in stale[0]
    assert locked_versions(nb)["beta"] == "1.0.0"
    assert info["fingerprint"] == manifest_of(nb)["lock"]["tool"]["envsync"]["fingerprint"]
    assert envsync(own_env, "lock", nb, "--check").returncode == 0  # no longer stale


def test_stale_lock_with_frozen_exits_3_and_leaves_the_notebook_byte_identical(
    nb: Path, own_env: dict[str, str], own_home: Path
) -> None:
    edit_manifest(nb, declare_beta)
    before = nb.read_bytes()

    code, out, err = launch_once(nb, own_env, "--frozen", "--port", str(free_port()))

    assert code == 3, err
    assert out == ""
    errors = error_lines(err)
    assert len(errors) == 1 and "stale" in errors[0] and "--frozen" in errors[0], err
    assert nb.read_bytes() == before
    assert nothing_built(own_home)


# --- what changed since this machine last ran it ---------------------------------------------


def test_collaborators_downgrade_is_warned_with_the_diff_and_still_served(
    nb: Path, own_env: dict[str, str]
) -> None:
    first, err = serve_and_stop(nb, own_env)
    assert not [ln for ln in warning_lines(err) if "last ran" in ln], err  # nothing ran before

    res = envsync(own_env, "add", nb, "alpha==1.0.0")  # the collaborator's change, synced in
    assert res.returncode == 0, res.stderr
    assert locked_versions(nb)["alpha"] == "1.0.0"

    second, err = serve_and_stop(nb, own_env)

    differs = [ln for ln in warning_lines(err) if "differs from what this machine last ran" in ln]
    assert len(differs) == 1, err
    alpha = [ln for ln in err.splitlines() if "alpha" in ln and "1.1.0" in ln and "1.0.0" in ln]
    assert alpha, err
    assert "downgraded" in alpha[0]
    assert alpha[0].index("1.1.0") < alpha[0].index("1.0.0")  # old → new
    assert second["fingerprint"] != first["fingerprint"]
    assert second["fingerprint"] == manifest_of(nb)["lock"]["tool"]["envsync"]["fingerprint"]


def test_hash_change_at_the_same_version_needs_yes_and_then_fails_the_install(
    nb: Path, own_env: dict[str, str], own_home: Path
) -> None:
    first, _err = serve_and_stop(nb, own_env)
    edit_manifest(nb, lambda m: (tamper_first_hash(m, "alpha"), refresh_fingerprint(m)))
    tampered = manifest_of(nb)["lock"]["tool"]["envsync"]["fingerprint"]
    assert tampered != first["fingerprint"]
    assert envsync(own_env, "show", nb).returncode == 0  # the lock loads: only the hash is wrong

    code, out, err = launch_once(nb, own_env, "--port", str(free_port()))
    assert code == 1, err
    assert out == ""
    errors = error_lines(err)
    assert len(errors) == 1 and "alpha" in errors[0] and "hash" in errors[0], err
    hint = [ln for ln in err.splitlines() if ln.startswith("hint:")]
    assert hint and "--yes" in hint[0], err

    code, out, err = launch_once(nb, own_env, "--yes", "--port", str(free_port()))
    assert code == 1, err
    assert out == ""  # never served
    errors = error_lines(err)
    assert len(errors) == 1 and errors[0].startswith("ERROR hash mismatch for alpha==1.1.0"), err
    settings = Settings(home=own_home)
    assert store.ready_envs(settings, tampered) == []
    assert [e.fingerprint for e in inventory.list_envs(settings) if e.state == "ready"] == [first["fingerprint"]]
    status = envsync(own_env, "status", "--json")
    assert json.loads(status.stdout) == []
    # The failed run is not remembered as run: the next launch still asks for --yes.
    code, _out, err = launch_once(nb, own_env, "--port", str(free_port()))
    assert code == 1 and "--yes" in err, err


# --- drift -----------------------------------------------------------------------------------


def test_hand_installed_package_is_removed_by_the_next_launch_with_a_warning(
    nb: Path, own_env: dict[str, str], local_index: LocalIndex
) -> None:
    first, _err = serve_and_stop(nb, own_env)
    env_dir = Path(first["env"])
    res = subprocess.run(
        [
            UV,
            "pip",
            "install",
            "--python",
            str(env_dir / "bin" / "python"),
            "--index-url",
            local_index.url,
            "winonly",
        ],
        env={k: v for k, v in own_env.items() if k != "ENVSYNC_HOME"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert res.returncode == 0, res.stderr
    assert list(env_dir.glob("lib/python*/site-packages/winonly-*.dist-info"))
    assert envsync(own_env, "check", nb).returncode == 3  # the drift is real

    second, err = serve_and_stop(nb, own_env)

    drifted = [ln for ln in warning_lines(err) if "drifted" in ln]
    assert len(drifted) == 1 and "winonly" in drifted[0] and drifted[0].endswith("repaired"), err
    assert second["env"] == first["env"]
    assert not list(env_dir.glob("lib/python*/site-packages/winonly*"))
    check = envsync(own_env, "check", nb)
    assert check.returncode == 0, check.stdout + check.stderr


# --- command line and security settings ------------------------------------------------------


def test_second_launch_on_a_busy_port_is_one_error_before_any_build(
    nb: Path, env: dict[str, str], tmp_path: Path, local_index: LocalIndex
) -> None:
    port = free_port()
    with launching(nb, env, port=port) as first:
        info = first.ready()
        other_home = tmp_path / "other-home"
        code, out, err = launch_once(nb, cli_env(other_home, local_index.url), "--port", str(port))

        assert code != 0
        assert out == ""
        errors = error_lines(err)
        assert len(errors) == 1 and f"port {port}" in errors[0] and "in use" in errors[0], err
        assert nothing_built(other_home)
        assert alive(info["pid"]) and first.proc.poll() is None
        assert api_status(info) == 200
        assert first.stop() == 0


def test_wildcard_origin_without_the_insecure_flag_is_a_usage_error(
    nb: Path, own_env: dict[str, str], own_home: Path
) -> None:
    code, out, err = launch_once(nb, own_env, "--allow-origin", "*", "--port", str(free_port()))
    assert code == 2, err
    assert out == ""
    errors = error_lines(err)
    assert len(errors) == 1 and "'*'" in errors[0] and "insecure" in errors[0], err
    assert nothing_built(own_home)


def test_non_loopback_bind_without_tls_is_refused(nb: Path, own_env: dict[str, str], own_home: Path) -> None:
    code, out, err = launch_once(nb, own_env, "--ip", "0.0.0.0", "--port", str(free_port()))  # noqa: S104
    assert code == 2, err
    assert out == ""
    errors = error_lines(err)
    assert len(errors) == 1 and "0.0.0.0" in errors[0] and "TLS" in errors[0], err
    assert nothing_built(own_home)


def test_token_on_argv_warns_that_ps_shows_it(nb: Path, env: dict[str, str]) -> None:
    token = "t" + secrets.token_urlsafe(24)  # argparse reads a leading "-" as an option
    with launching(nb, env, "--token", token) as launch:
        info = launch.ready()
        assert info["token"] == token
        assert not any(token in arg for arg in psutil.Process(info["pid"]).cmdline())
        assert launch.stop() == 0
        # stderr is read by its own thread: look once the process has ended and it is all in.
        warned = [ln for ln in warning_lines(launch.stderr) if "ps" in ln and "ENVSYNC_TOKEN" in ln]
        assert warned, launch.stderr


def test_token_from_environment_is_served_and_not_on_the_gateway_command_line(
    nb: Path, env: dict[str, str]
) -> None:
    token = secrets.token_urlsafe(24)
    with launching(nb, {**env, "ENVSYNC_TOKEN": token}) as launch:
        info = launch.ready()
        assert info["token"] == token
        assert not any(token in arg for arg in psutil.Process(info["pid"]).cmdline())
        assert not any(token in arg for arg in psutil.Process(launch.proc.pid).cmdline())
        assert api_status(info) == 200
        assert api_status(info, token="wrong-" + token) in (401, 403)
        assert launch.stop() == 0
        assert not [ln for ln in warning_lines(launch.stderr) if "ps" in ln], launch.stderr


# --- status and stop -------------------------------------------------------------------------


def test_status_lists_the_running_gateway_and_stop_ends_it(nb: Path, env: dict[str, str]) -> None:
    with launching(nb, env) as launch:
        info = launch.ready()
        port = int(info["url"].rsplit(":", 1)[1])

        status = envsync(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert len(rows) == 1
        row = rows[0]
        assert row["port"] == port and row["pid"] == info["pid"]
        assert row["project"] == info["project"] == "nb"
        assert row["url"] == info["url"] and "token" not in row["url"]
        assert row["fingerprint"] == info["fingerprint"]
        assert row["kernels"] == []
        assert info["token"] not in status.stdout + status.stderr

        stopped = envsync(env, "stop", str(port))
        assert stopped.returncode == 0, stopped.stderr
        assert wait_until(lambda: not alive(info["pid"]), 5.0)
        launch.wait()  # the launch notices and ends by itself

        after = envsync(env, "status", "--json")
        assert after.returncode == 0 and json.loads(after.stdout) == []
        assert "no gateway is running" in envsync(env, "status").stdout


def test_launch_stopped_by_envsync_stop_exits_0_without_an_error(nb: Path, env: dict[str, str]) -> None:
    with launching(nb, env) as launch:
        info = launch.ready()
        port = int(info["url"].rsplit(":", 1)[1])
        assert envsync(env, "stop", str(port)).returncode == 0
        code = launch.wait()
        assert error_lines(launch.stderr) == []
        assert code == 0


# --- while it runs ---------------------------------------------------------------------------


def test_lock_rewritten_while_running_emits_lock_changed_and_keeps_serving(
    nb: Path, env: dict[str, str]
) -> None:
    with launching(nb, env) as launch:
        info = launch.ready()
        res = envsync(env, "add", nb, "beta")  # another process rewrites the notebook's lock
        assert res.returncode == 0, res.stderr

        event = launch.next_json(30.0)

        assert event is not None, launch.stderr
        assert event["event"] == "lock-changed"
        assert event["stale"] is False
        assert {"name": "beta", "kind": "added", "old": None, "new": "1.0.0"} in event["diff"]["changes"]
        assert event["diff"]["fingerprints"] == {
            "old": info["fingerprint"],
            "new": manifest_of(nb)["lock"]["tool"]["envsync"]["fingerprint"],
        }
        assert launch.proc.poll() is None
        assert api_status(info) == 200
        assert launch.stop() == 0
        assert "lock changed on disk" in launch.stderr  # the text for people, beside the event


def test_lock_change_synced_in_during_the_build_is_reported_once_serving(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    index = GatedIndex(local_index.root)
    try:
        env = cli_env(tmp_path / "home", index.url)
        nb = tmp_path / "nb.ipynb"
        res = envsync(env, "init", nb, "--index", index.url, "--python", "3.11", "alpha<2")
        assert res.returncode == 0, res.stderr
        theirs = tmp_path / "theirs.ipynb"  # the collaborator's version of the same notebook
        shutil.copyfile(nb, theirs)
        assert envsync(env, "add", theirs, "beta").returncode == 0
        incoming = tmp_path / ".incoming.ipynb"
        shutil.copyfile(theirs, incoming)

        index.armed = True  # the build must download: a private uv cache has no wheels
        with launching(nb, {**env, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}) as launch:
            assert index.requested.wait(60), launch.stderr
            os.replace(incoming, nb)  # the sync client writes the collaborator's notebook
            index.release.set()
            info = launch.ready()
            assert locked_versions(nb).get("beta") == "1.0.0"
            event = launch.next_json(5.0)  # the watcher looks every second
            assert event is not None and event["event"] == "lock-changed", launch.stderr
            assert {"name": "beta", "kind": "added", "old": None, "new": "1.0.0"} in event["diff"]["changes"]
            assert event["diff"]["fingerprints"]["old"] == info["fingerprint"]
            assert launch.stop() == 0
    finally:
        index.stop()


def test_sigterm_stops_the_gateway_and_exits_0(nb: Path, env: dict[str, str]) -> None:
    with launching(nb, env) as launch:
        info = launch.ready()
        assert launch.stop(signal.SIGTERM) == 0, launch.stderr
        assert not alive(info["pid"])
        assert error_lines(launch.stderr) == []
        assert json.loads(envsync(env, "status", "--json").stdout) == []


# --- the real thing: PyPI, a real kernel, REST and WebSocket ---------------------------------


@pytest.mark.network
def test_quickstart_serves_only_its_locked_kernel_to_the_allowed_origin(tmp_path: Path) -> None:
    import websocket

    nb = tmp_path / "quickstart.ipynb"
    shutil.copyfile(REPO / "examples" / "quickstart.ipynb", nb)
    manifest = manifest_of(nb)
    fingerprint = manifest["lock"]["tool"]["envsync"]["fingerprint"]
    numpy_version = locked_versions(nb)["numpy"]
    env = cli_env(tmp_path / "home", None)

    with launching(nb, env, "--allow-origin", ORIGIN) as launch:
        info = launch.ready(timeout=600.0)
        url, token = info["url"], info["token"]
        auth = {"Authorization": f"token {token}"}
        assert info["kernel"] == "envsync-quickstart" and info["fingerprint"] == fingerprint

        specs = requests.get(f"{url}/api/kernelspecs", headers=auth, timeout=10)
        assert specs.status_code == 200
        listed = specs.json()["kernelspecs"]
        assert set(listed) == {"envsync-quickstart"}
        assert listed["envsync-quickstart"]["spec"]["metadata"]["envsync"]["fingerprint"] == fingerprint

        assert requests.get(f"{url}/api/kernelspecs", timeout=10).status_code in (401, 403)

        started = requests.post(f"{url}/api/kernels", json={"name": "python3"}, headers=auth, timeout=60)
        assert started.status_code == 201, started.text
        kernel = started.json()
        assert kernel["name"] == "envsync-quickstart"
        kernel_pids = children_of(info["pid"])
        assert kernel_pids, "no kernel process under the gateway"

        ws_url = url.replace("http", "ws", 1) + f"/api/kernels/{kernel['id']}/channels?token={token}"
        ws = websocket.create_connection(ws_url, origin=ORIGIN, timeout=60)
        try:
            printed = execute(ws, "import sys, numpy; print(sys.executable); print(numpy.__version__)")
        finally:
            ws.close()
        executable, version = printed.split()
        assert Path(executable).is_relative_to(Path(info["env"]))
        assert version == numpy_version

        preflight = requests.options(
            f"{url}/api/kernels",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
            timeout=10,
        )
        assert preflight.status_code in (200, 204), preflight.status_code
        assert preflight.headers.get("Access-Control-Allow-Origin") == ORIGIN

        foreign = requests.options(
            f"{url}/api/kernels",
            headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert "Access-Control-Allow-Origin" not in foreign.headers
        foreign_get = requests.get(f"{url}/api", headers={**auth, "Origin": FOREIGN}, timeout=10)
        assert "Access-Control-Allow-Origin" not in foreign_get.headers

        evil = requests.get(
            f"{url}/api", headers={**auth, "Host": f"evil.example:{url.rsplit(':', 1)[1]}"}, timeout=10
        )
        assert evil.status_code == 403

        assert launch.stop() == 0, launch.stderr
        assert not alive(info["pid"])
        assert wait_until(lambda: not any(alive(p) for p in kernel_pids), 10.0), (
            "a kernel outlived the gateway"
        )


# --- launch as an operation: every step it reached is undone ---------------------------------


def op_settings(home: Path, local_index: LocalIndex) -> Settings:
    return Settings(home=home, allowed_indexes=(local_index.url,))


def holds(settings: Settings) -> list[Path]:
    """The env hold files: one while a launch serves (or is about to)."""
    return sorted((settings.envs_dir / ".holds").rglob("*.hold"))


def test_launch_releases_the_env_hold_when_the_gateway_fails_to_start(
    nb: Path, own_home: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envsync.errors import GatewayError
    from envsync.gateway import process, registry
    from envsync.ops.launch import LaunchRequest, launch

    settings = op_settings(own_home, local_index)
    held_at_start: list[list[Path]] = []

    def failing_start(spec: Any, **_kwargs: Any) -> Any:
        held_at_start.append(holds(settings))
        raise GatewayError("injected: the gateway did not start")

    monkeypatch.setattr(process, "start", failing_start)
    with pytest.raises(GatewayError, match="injected"), launch(LaunchRequest(nb), settings=settings):
        raise AssertionError("launch served without a gateway")
    assert len(held_at_start) == 1 and len(held_at_start[0]) == 1  # the hold was taken
    assert holds(settings) == []
    assert registry.running(settings) == []
    assert not list(settings.runtime_dir.glob("gateway-*.json"))


def test_launch_stops_the_gateway_and_releases_the_hold_when_recording_fails(
    nb: Path, own_home: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envsync.gateway import process, registry
    from envsync.ops.launch import LaunchRequest, launch

    settings = op_settings(own_home, local_index)
    started: list[process.RunningGateway] = []
    real_start = process.start

    def start(spec: Any, **kwargs: Any) -> process.RunningGateway:
        started.append(real_start(spec, **kwargs))
        return started[-1]

    def failing_record(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(28, "injected: no space left on device")

    monkeypatch.setattr(process, "start", start)
    monkeypatch.setattr(registry, "record", failing_record)
    try:
        with pytest.raises(OSError, match="injected"), launch(LaunchRequest(nb), settings=settings):
            raise AssertionError("launch served without a registry entry")
        assert len(started) == 1
        assert not alive(started[0].pid)
        assert holds(settings) == []
    finally:
        for gw in started:
            if gw.process is not None:
                proc.shutdown(gw.process)


def test_leaving_launch_by_an_error_forgets_the_record_stops_the_gateway_and_releases_the_hold(
    nb: Path, own_home: Path, local_index: LocalIndex
) -> None:
    from envsync.gateway import registry
    from envsync.ops.launch import LaunchInfo, LaunchRequest, launch

    settings = op_settings(own_home, local_index)
    served: list[LaunchInfo] = []
    try:
        with pytest.raises(RuntimeError, match="boom"), launch(LaunchRequest(nb), settings=settings) as info:
            served.append(info)
            assert [r.pid for r in registry.running(settings)] == [info.pid]
            assert len(holds(settings)) == 1
            assert api_status(info.to_dict()) == 200
            raise RuntimeError("boom")
        assert not alive(served[0].pid)
        assert registry.running(settings) == []
        assert holds(settings) == []
    finally:
        for info in served:
            if info.gateway.process is not None:
                proc.shutdown(info.gateway.process)
