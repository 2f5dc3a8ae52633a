"""Faults: processes killed with SIGKILL at chosen moments, a full disk, an index that goes
away, a kernel that crashes, a gateway killed under running kernels, eight launches at once.

For each: the next run succeeds, and nothing half-made is ever used. Children are real
`envsync` processes; a killed child's own children (uv) are ended by PID, adopted through
a child subreaper so that none escapes the count.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from envsync import proc
from envsync.gateway import process as gateway
from envsync.gateway.spec import GatewaySpec
from tests.manifests import edit_manifest, manifest_of
from tests.reliability.conftest import (
    ControlledIndex,
    assert_one_clean_error,
    cli,
    end_orphans,
    kill9,
    launch,
    output_of,
    ready_line,
    record,
    sha256_of,
    spawn_envsync,
    stop_launch,
)
from tests.support.gateway_client import (
    auth,
    connect,
    execute,
    execute_message,
    kernel_pid,
    start_kernel,
    write_spec,
)
from tests.support.processes import alive, child_env, descendants, end_by_pid
from tests.support.wait import wait_until
from tests.wheelhouse import LocalIndex

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc, uses prctl and tmpfs"
)

KERNEL = "envsync-faults"


@pytest.fixture
def env_vars(
    tmp_path: Path, controlled_index: ControlledIndex, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A private home and uv cache (so every build really downloads), the controlled index allowed."""
    monkeypatch.setenv("ENVSYNC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ENVSYNC_ALLOWED_INDEXES", controlled_index.url)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return child_env()


@pytest.fixture
def nb(
    tmp_path: Path,
    controlled_index: ControlledIndex,
    env_vars: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> Path:
    path = tmp_path / "work" / "analysis.ipynb"
    path.parent.mkdir()
    r = cli(capsys, "init", path, "alpha", "--index", controlled_index.url, "--python", "3.11")
    assert r.code == 0, r.err
    return path


def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def envs_listing(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    r = cli(capsys, "envs", "list", "--json")
    assert r.code == 0, r.err
    return list(json.loads(r.out))


def beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def uv_running_below(pid: int) -> bool:
    return any(b"/uv" in _cmd(p) for p in descendants(pid))


def _cmd(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# --- kill -9 during resolve -----------------------------------------------------------------


def test_lock_killed_while_uv_resolves_leaves_the_notebook_unchanged_and_the_next_lock_succeeds(
    tmp_path: Path,
    nb: Path,
    controlled_index: ControlledIndex,
    env_vars: dict[str, str],
    subreaper: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edit_manifest(nb, lambda m: m["dependencies"].append("beta") and None)  # stale: `lock` will write
    before = sha256_of(nb)
    scratch = set(Path(tempfile.gettempdir()).glob("envsync-resolve-*"))
    controlled_index.gate_prefix = "/simple/"
    controlled_index.hold()
    child = spawn_envsync(["lock", nb], log_dir=tmp_path / "logs", env=env_vars)
    assert controlled_index.requested.wait(timeout=60), output_of(child)
    assert uv_running_below(child.pid)  # killed while uv itself runs
    kill9(child)
    controlled_index.release()  # the orphaned uv may go on; it writes nowhere the notebook is
    time.sleep(0.3)
    end_orphans()
    assert sha256_of(nb) == before
    assert beside(nb) == ["analysis.ipynb"]
    left = set(Path(tempfile.gettempdir()).glob("envsync-resolve-*")) - scratch
    record("faults.resolve_kill_scratch_dirs_left_in_tmp", len(left))
    for d in left:  # never read again by envsync; the test tidies up
        shutil.rmtree(d, ignore_errors=True)
    controlled_index.gate_prefix = "/files/"
    r = cli(capsys, "lock", nb)
    assert r.code == 0, r.err
    assert {p["name"] for p in manifest_of(nb)["lock"]["packages"]} >= {"alpha", "beta"}
    assert cli(capsys, "lock", nb, "--check").code == 0


# --- kill -9 during install -----------------------------------------------------------------


def test_sync_killed_mid_install_is_never_listed_as_ready_and_the_next_sync_rebuilds(
    tmp_path: Path,
    nb: Path,
    controlled_index: ControlledIndex,
    env_vars: dict[str, str],
    subreaper: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    controlled_index.hold()
    child = spawn_envsync(["sync", nb], log_dir=tmp_path / "logs", env=env_vars)
    assert controlled_index.requested.wait(timeout=60), output_of(child)
    during = envs_listing(capsys)
    assert [e["state"] for e in during] == ["building"]
    kill9(child)
    # Let the orphaned installer finish writing into its (dead) build before looking again.
    controlled_index.release()
    orphans = [p for p in descendants(os.getpid())]
    wait_until(lambda: not any(alive(p) for p in orphans), timeout=30)
    end_orphans()
    after = envs_listing(capsys)
    assert [e["state"] for e in after] == ["incomplete"], after
    assert_one_clean_error(cli(capsys, "check", nb), codes=3, text="no environment for this lock yet")
    assert json.loads(cli(capsys, "kernels", "list", "--json").out) == []
    r = cli(capsys, "sync", nb, "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["installer-ran"] and not result["reused"]
    assert result["env"] != after[0]["path"]
    states = sorted(e["state"] for e in envs_listing(capsys))
    assert states == ["ready"]  # the dead build was cleared before the rebuild
    assert cli(capsys, "check", nb).code == 0


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.25, 0.6])
def test_sync_killed_at_any_moment_leaves_only_complete_envs_marked_ready(
    delay: float,
    tmp_path: Path,
    nb: Path,
    controlled_index: ControlledIndex,
    env_vars: dict[str, str],
    subreaper: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    controlled_index.slow = 0.1  # 3 files: a ~0.3 s download-and-install window
    controlled_index.hold()
    child = spawn_envsync(["sync", nb], log_dir=tmp_path / "logs", env=env_vars)
    assert controlled_index.requested.wait(timeout=60), output_of(child)
    controlled_index.release()
    time.sleep(delay)
    kill9(child)
    time.sleep(0.5)
    end_orphans()
    for env in envs_listing(capsys):
        if env["state"] == "ready":  # then it must be complete: check says it matches the lock
            assert cli(capsys, "check", nb).code == 0
    assert cli(capsys, "sync", nb).code == 0
    assert cli(capsys, "check", nb).code == 0
    assert [e["state"] for e in envs_listing(capsys)].count("ready") == 1


def test_sync_interrupted_with_ctrl_c_exits_130_and_leaves_no_env(
    tmp_path: Path,
    nb: Path,
    controlled_index: ControlledIndex,
    env_vars: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    controlled_index.hold()
    child = spawn_envsync(["sync", nb], log_dir=tmp_path / "logs", env=env_vars)
    assert controlled_index.requested.wait(timeout=60)
    os.kill(child.pid, signal.SIGINT)
    assert child.wait(timeout=30) == 130
    controlled_index.release()
    _, err = output_of(child)
    assert [ln for ln in err.splitlines() if ln.startswith("ERROR")] == ["ERROR interrupted"]
    assert envs_listing(capsys) == []
    assert cli(capsys, "sync", nb).code == 0


# --- kill -9 during the kernelspec write ----------------------------------------------------

# Runs envsync's CLI with one change: just before the atomic rename that puts `PAUSE_FILE`
# in place, it tells the test (PAUSE_SIGNAL) and waits to be killed. The write itself is
# envsync's own code; only the moment of the kill is chosen.
PAUSED_CLI = r"""
import os, sys, time
from pathlib import Path
real_replace = os.replace
def replace(src, dst, *a, **k):
    if os.fspath(dst).endswith(os.environ["PAUSE_FILE"]):
        Path(os.environ["PAUSE_SIGNAL"]).write_text(os.fspath(src))
        time.sleep(120)
    return real_replace(src, dst, *a, **k)
os.replace = replace
from envsync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_just_before_rename(tmp_path: Path, argv: list[Any], env: dict[str, str], file_name: str) -> str:
    """Run envsync ARGV, SIGKILL it right before it renames `file_name` into place; the temp path."""
    signal_file = tmp_path / "paused"
    signal_file.unlink(missing_ok=True)
    env = {
        **env,
        "PAUSE_FILE": file_name,
        "PAUSE_SIGNAL": str(signal_file),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    child = spawn_envsync(argv, log_dir=tmp_path / "logs", env=env, python_code=PAUSED_CLI)
    assert wait_until(signal_file.exists, timeout=60), output_of(child)
    kill9(child)
    return signal_file.read_text()


def kernel_json(tmp_path: Path) -> Path:
    return home(tmp_path) / "jupyter" / "kernels" / "envsync-analysis" / "kernel.json"


def test_sync_killed_during_the_first_kernelspec_write_is_repaired_by_the_next_sync(
    tmp_path: Path, nb: Path, env_vars: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    kill_just_before_rename(tmp_path, ["sync", nb], env_vars, "kernel.json")
    assert not kernel_json(tmp_path).exists()
    r = cli(capsys, "sync", nb)
    assert r.code == 0, r.err
    assert json.loads(kernel_json(tmp_path).read_text())["metadata"]["envsync"]["project"] == "analysis"


def test_sync_killed_while_rewriting_the_kernelspec_keeps_the_old_one_and_the_next_sync_succeeds(
    tmp_path: Path, nb: Path, env_vars: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "sync", nb).code == 0
    # A sync rewrites a kernelspec only when its bytes would change: these are the same spec
    # in another layout, so the next sync rewrites it, and is killed doing so.
    kernel_json(tmp_path).write_text(json.dumps(json.loads(kernel_json(tmp_path).read_bytes()), indent=4))
    old = kernel_json(tmp_path).read_bytes()
    temp = kill_just_before_rename(tmp_path, ["sync", nb], env_vars, "kernel.json")
    assert kernel_json(tmp_path).read_bytes() == old  # the complete old spec, never a partial one
    spec = json.loads(old)
    assert Path(spec["argv"][0]).exists()
    r = cli(capsys, "sync", nb)
    assert r.code == 0, r.err
    assert json.loads(kernel_json(tmp_path).read_text()) == spec
    names = json.loads(cli(capsys, "kernels", "list", "--json").out)
    assert [k["name"] for k in names] == ["envsync-analysis"]
    record("faults.kernelspec_temp_left_after_kill", Path(temp).exists())


def test_a_sync_on_a_built_env_leaves_an_unchanged_kernelspec_alone(
    tmp_path: Path, nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "sync", nb).code == 0
    before = kernel_json(tmp_path).stat()
    assert cli(capsys, "sync", nb).code == 0
    after = kernel_json(tmp_path).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# --- kill -9 during the notebook write ------------------------------------------------------


def test_notebook_write_killed_at_the_rename_leaves_the_old_notebook(
    tmp_path: Path, nb: Path, env_vars: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = nb.read_bytes()
    temp = kill_just_before_rename(tmp_path, ["add", nb, "beta"], env_vars, "analysis.ipynb")
    assert nb.read_bytes() == before
    assert Path(temp).exists(), "the kill did not land between the temp write and the rename"
    r = cli(capsys, "add", nb, "beta")
    assert r.code == 0, r.err
    # The next write removes what the killed writer left beside the notebook.
    left = sorted(p.name for p in nb.parent.glob(f".{nb.name}.*.tmp"))
    record("faults.notebook_temp_left_after_next_write", left)
    assert left == []


def test_notebook_is_old_or_new_whenever_a_write_is_killed(
    tmp_path: Path, nb: Path, env_vars: dict[str, str], subreaper: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kill `envsync add/remove` at random moments, many times, on a 30 MB notebook."""
    doc = json.loads(nb.read_bytes())
    doc["cells"].append(
        {
            "cell_type": "code",
            "execution_count": 1,
            "id": "big",
            "metadata": {},
            "source": ["x"],
            "outputs": [
                {
                    "output_type": "stream",
                    "name": "stdout",
                    "text": [("0123456789abcdef" * 64 + "\n") * 1000] * 30,
                }
            ],
        }
    )
    nb.write_bytes((json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    without = nb.read_bytes()
    assert cli(capsys, "add", nb, "beta").code == 0
    with_beta = nb.read_bytes()
    assert cli(capsys, "remove", nb, "beta").code == 0
    assert nb.read_bytes() == without  # add then remove gives back the same bytes
    versions = {sha256_of(nb): "without-beta"}
    nb.write_bytes(with_beta)
    versions[sha256_of(nb)] = "with-beta"
    nb.write_bytes(without)
    scratch = set(Path(tempfile.gettempdir()).glob("envsync-resolve-*"))
    rng = random.Random(6)
    seen: dict[str, int] = {"without-beta": 0, "with-beta": 0}
    mid_write = 0
    kills = 24
    for i in range(kills):
        state = versions[sha256_of(nb)]
        argv = ["remove", nb, "beta"] if state == "with-beta" else ["add", nb, "beta"]
        child = spawn_envsync(argv, log_dir=tmp_path / "logs", env=env_vars)
        if i % 3 == 0:
            time.sleep(rng.uniform(0.0, 0.6))  # anywhere in the run
        else:
            # Aim at the write itself: it starts when the temp file beside the notebook appears.
            writing = wait_until(
                lambda: any(p.name.endswith(".tmp") for p in nb.parent.iterdir()), timeout=30, poll=0.001
            )
            assert writing or child.poll() is not None
            time.sleep(rng.uniform(0.0, 0.05))
        kill9(child)
        end_orphans()
        now = sha256_of(nb)
        assert now in versions, f"kill {i}: the notebook is neither the old nor the new version"
        seen[versions[now]] += 1
        leftovers = [p for p in nb.parent.iterdir() if p.name != nb.name]
        if leftovers:
            mid_write += 1  # killed between the temp file and the rename
        for p in leftovers:
            p.unlink()  # the test tidies up; envsync does not (see docs/reliability.md)
    r = cli(capsys, "lock", nb, "--check")
    assert r.code == 0, r.err
    assert cli(capsys, "add", nb, "gamma").code == 0  # and the next write succeeds
    left = set(Path(tempfile.gettempdir()).glob("envsync-resolve-*")) - scratch
    for d in left:  # kills during uv leave its scratch folder; envsync never reads it again
        shutil.rmtree(d, ignore_errors=True)
    record(
        "faults.notebook_write_kills",
        {
            "kills": kills,
            "file_mb": round(nb.stat().st_size / 1e6),
            "killed_mid_write": mid_write,
            "version_found_after_kill": seen,
            "neither_old_nor_new": 0,
            "resolve_scratch_dirs_left_in_tmp": len(left),
        },
    )


# --- disk full during install ---------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs (root only here); anything else is a skip with the reason."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small filesystem")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def test_disk_full_during_install_is_one_error_no_ready_env_and_the_next_sync_succeeds(
    tmp_path: Path,
    tiny_disk: Path,
    local_index: LocalIndex,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An index of its own with a 16 MB package, so that the install (not the venv) fills the disk.
    index = LocalIndex(tmp_path / "bulky-index")
    for name, version in (("ipykernel", "6.0.0"), ("comm", "0.2.0")):
        index.add(name, version, requires=["comm>=0.1"] if name == "ipykernel" else [])
    blob = random.Random(1).randbytes(12_000_000).hex()[:16_000_000]
    index.add("bulky", "1.0.0", files={"bulky/__init__.py": "", "bulky/data.txt": blob})
    index.start()
    try:
        monkeypatch.setenv("ENVSYNC_HOME", str(tiny_disk / "home"))
        monkeypatch.setenv("ENVSYNC_ALLOWED_INDEXES", index.url)
        nb = tmp_path / "bulky.ipynb"
        assert cli(capsys, "init", nb, "bulky", "--index", index.url, "--python", "3.11").code == 0
        filler = tiny_disk / "filler"
        filler.write_bytes(b"\0" * 12_000_000)  # 12 of 24 MB taken: 16 MB cannot fit
        before = sha256_of(nb)
        r = cli(capsys, "sync", nb)
        line = assert_one_clean_error(r)
        assert "No space left on device" in r.err or "space" in line.lower(), r.err
        assert sha256_of(nb) == before
        assert [e for e in envs_listing(capsys) if e["state"] == "ready"] == []
        assert_one_clean_error(cli(capsys, "check", nb), codes=3)
        record("faults.disk_full_error", {"error": line[:140] + "…", "hint": r.hint})
        filler.unlink()  # the user frees space
        r = cli(capsys, "sync", nb)
        assert r.code == 0, r.err
        assert cli(capsys, "check", nb).code == 0
    finally:
        index.stop()


# --- index unreachable mid-install ----------------------------------------------------------


def test_index_gone_mid_install_is_one_error_and_the_next_sync_after_it_returns_succeeds(
    tmp_path: Path,
    nb: Path,
    controlled_index: ControlledIndex,
    env_vars: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    controlled_index.hold()
    # uv then reports the dead index at once instead of after its retries' back-off; this takes
    # effect where envsync's proc.clean_env passes UV_HTTP_RETRIES on to uv.
    env = {**env_vars, "UV_HTTP_RETRIES": "0"}
    child = spawn_envsync(["sync", nb], log_dir=tmp_path / "logs", env=env)
    assert controlled_index.requested.wait(timeout=60)
    controlled_index.die()  # downloads in flight end without an answer; new connections are refused
    code = child.wait(timeout=120)
    out, err = output_of(child)
    lines = [ln for ln in err.splitlines() if ln.startswith("ERROR")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert not lines[0].startswith("ERROR unexpected")
    hints = [ln for ln in err.splitlines() if ln.startswith("hint:")]
    record("faults.index_gone_error", {"error": lines[0][:160], "hint": "\n".join(hints)})
    assert [e for e in envs_listing(capsys) if e["state"] == "ready"] == []
    controlled_index.revive()
    r = cli(capsys, "sync", nb)
    assert r.code == 0, r.err
    assert cli(capsys, "check", nb).code == 0


# --- kernels and the gateway ----------------------------------------------------------------


@pytest.fixture
def jupyter_dir(tmp_path: Path) -> Path:
    """A kernelspec on the dev venv's python, which has the real ipykernel."""
    root = tmp_path / "jupyter"
    write_spec(root, KERNEL, {"envsync": {"fingerprint": "sha256:faults", "project": "faults"}})
    return root


@contextlib.contextmanager
def running_gateway(jupyter_dir: Path) -> Iterator[gateway.RunningGateway]:
    gw = gateway.start(GatewaySpec(KERNEL, jupyter_dir, working_dir=jupyter_dir))
    try:
        yield gw
    finally:
        kids = descendants(gw.pid)
        if gw.process is not None:
            proc.shutdown(gw.process, interrupt_timeout=8.0, terminate_timeout=2.0)
        for pid in kids:
            if alive(pid):
                end_by_pid(pid, grace=0.5)


# 0 s: the client restarts at once; 3.2 s: just after jupyter_client's own restarter (it polls
# every 3 s) has brought the kernel back, so the two restarts race.
@pytest.mark.parametrize("delay", [0.0, 3.2], ids=["at-once", "racing-the-auto-restarter"])
def test_crashed_kernel_is_restarted_through_the_rest_api_and_runs_code_again(
    delay: float, jupyter_dir: Path
) -> None:
    with running_gateway(jupyter_dir) as gw:
        kernel = start_kernel(gw)
        kid = kernel["id"]
        first = kernel_pid(gw, kid)
        ws = connect(gw, kid)
        try:
            assert execute(ws, "x = 41; print(x + 1)") == "42\n"
            ws.send(json.dumps(execute_message("import os; os._exit(1)")))
            assert wait_until(lambda: not alive(first), timeout=20)
        finally:
            ws.close()
        time.sleep(delay)
        r = requests.post(f"{gw.url}/api/kernels/{kid}/restart", headers=auth(gw), json={}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == kid
        second = kernel_pid(gw, kid)
        assert second != first and alive(second) and not alive(first)
        ws = connect(gw, kid)  # as a client reconnects after a restart: nudged first
        try:
            assert execute(ws, "print('x' in dir())") == "False\n"  # a fresh kernel: old state is gone
            assert execute(ws, "print(6 * 7)") == "42\n"
        finally:
            ws.close()
        assert [k["id"] for k in gateway.kernels(gw)] == [kid]
        pids = descendants(gw.pid)
        gateway.stop(gw)
        assert not alive(gw.pid) and not any(alive(p) for p in pids)


def test_gateway_killed_with_sigkill_takes_its_busy_kernels_with_it(
    jupyter_dir: Path, subreaper: None
) -> None:
    gw = gateway.start(GatewaySpec(KERNEL, jupyter_dir, working_dir=jupyter_dir))
    kernels: list[int] = []
    try:
        sockets = []
        for _ in range(3):
            k = start_kernel(gw)
            ws = connect(gw, k["id"])
            assert execute(ws, "print('up')") == "up\n"
            ws.send(
                json.dumps(execute_message("import time\nwhile True: time.sleep(0.05)"))
            )  # busy in a cell
            sockets.append(ws)
            kernels.append(kernel_pid(gw, k["id"]))
        assert len(kernels) == 3 and all(alive(p) for p in kernels)
        start = time.monotonic()
        os.kill(gw.pid, signal.SIGKILL)
        assert gw.process is not None
        gw.process.wait(timeout=10)
        assert wait_until(lambda: not any(alive(p) for p in kernels), timeout=10), [
            p for p in kernels if alive(p)
        ]
        record("faults.kernels_gone_after_gateway_sigkill_s", round(time.monotonic() - start, 2))
        for ws in sockets:
            ws.close()
    finally:
        for pid in kernels:
            if alive(pid):
                end_by_pid(pid, grace=0.5)
        end_orphans()


# --- envsync launch under faults -------------------------------------------------------------


def test_launch_whose_gateway_is_killed_says_so_in_one_line_and_forgets_it(
    tmp_path: Path, nb: Path, env_vars: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    child = launch(tmp_path, nb, env_vars)
    try:
        info = ready_line(child)
        assert info is not None, output_of(child)
        os.kill(info["pid"], signal.SIGKILL)
        code = child.wait(timeout=30)
    finally:
        stop_launch(child)
    _, err = output_of(child)
    errors = [ln for ln in err.splitlines() if ln.startswith("ERROR")]
    assert code == 1 and errors == [errors[0]] and "Kernel Gateway exited unexpectedly" in errors[0], err
    assert "Traceback" not in err
    record("faults.launch_gateway_killed_error", errors[0])
    assert json.loads(cli(capsys, "status", "--json").out) == []
    again = launch(tmp_path, nb, env_vars)
    try:
        assert ready_line(again) is not None
    finally:
        assert stop_launch(again) == 0


def test_launch_killed_with_sigkill_takes_its_gateway_and_kernels_with_it(
    tmp_path: Path, nb: Path, env_vars: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    child = launch(tmp_path, nb, env_vars)
    info = ready_line(child)
    assert info is not None, output_of(child)
    kill9(child)
    try:
        gone = wait_until(lambda: not alive(info["pid"]), timeout=15)
        record("faults.gateway_after_launch_sigkill", "exits with launch" if gone else "keeps running")
        assert gone, "the gateway outlived the envsync launch that started it"
        assert json.loads(cli(capsys, "status", "--json").out) == []
    finally:
        if alive(info["pid"]):
            end_by_pid(info["pid"])
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info["pid"], os.WNOHANG)


def test_eight_concurrent_launches_of_one_notebook_serve_on_distinct_ports_from_one_env(
    tmp_path: Path, nb: Path, env_vars: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.monotonic()
    children = [launch(tmp_path, nb, env_vars) for _ in range(8)]
    served: list[dict[str, Any]] = []
    failed: list[str] = []
    try:
        for child in children:
            info = ready_line(child, timeout=120)
            if info is None:
                _, err = output_of(child)
                lines = [ln for ln in err.splitlines() if ln.startswith("ERROR")]
                assert len(lines) == 1 and "Traceback" not in err, err  # a clean failure
                failed.append(lines[0])
            else:
                served.append(info)
        all_ready = time.monotonic() - start
        assert served, failed
        assert len({s["url"] for s in served}) == len(served)  # distinct ports
        assert len({s["pid"] for s in served}) == len(served)
        assert len({s["env"] for s in served}) == 1  # one env for all
        for s in served:
            r = requests.get(
                f"{s['url']}/api/kernelspecs", headers={"Authorization": f"token {s['token']}"}, timeout=10
            )
            assert r.status_code == 200 and list(r.json()["kernelspecs"]) == [s["kernel"]]
        builds = [e for e in envs_listing(capsys)]
        assert [e["state"] for e in builds] == ["ready"]  # exactly one env was built
        status = json.loads(cli(capsys, "status", "--json").out)
        assert sorted(g["pid"] for g in status) == sorted(s["pid"] for s in served)
        gateway_pids = [s["pid"] for s in served]
    finally:
        codes = [stop_launch(c) for c in children]
    assert all(c in (0, 1) for c in codes), codes
    assert not any(alive(p) for p in gateway_pids)
    assert json.loads(cli(capsys, "status", "--json").out) == []
    record(
        "faults.eight_launches",
        {
            "served": len(served),
            "failed_cleanly": len(failed),
            "envs_built": 1,
            "seconds_until_all_answered": round(all_ready, 1),
            "failures": failed,
        },
    )
