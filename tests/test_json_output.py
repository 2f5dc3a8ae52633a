"""Every `--json` output speaks one key style: lower-case kebab-case, at every depth.

Each command that takes `--json` runs for real (the local index, a built environment, a
gateway with a running kernel, a launch that sees its lock change) and every key of what
it printed is checked. A command that gains `--json` without a run here fails the test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from envsync.cli import build_parser, main
from envsync.gateway import process, registry
from envsync.gateway.spec import GatewaySpec
from envsync.lock import resolve as resolve_module
from envsync.settings import Settings
from tests.support.gateway_client import start_kernel, write_spec
from tests.support.processes import alive, children_of, end_by_pid, free_port, kill_pids
from tests.wheelhouse import LocalIndex

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
READY_TIMEOUT = 90.0


def bad_keys(value: Any, where: str = "$") -> list[str]:
    """Every dict key below `value` that is not kebab-case, with where it was found."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or KEY.fullmatch(key) is None:
                found.append(f"{where}.{key}")
            found += bad_keys(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += bad_keys(item, f"{where}[{i}]")
    return found


def json_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    """The command paths (e.g. "envs gc") whose parser has a --json option."""
    found: set[str] = set()
    for action in parser._actions:
        if "--json" in action.option_strings and prefix:
            found.add(" ".join(prefix))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= json_commands(sub, (*prefix, name))
    return found


class Outputs:
    """What each command printed on stdout, parsed, by command path."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.seen: dict[str, list[Any]] = {}

    def run(self, command: str, *argv: str | Path, code: int = 0) -> Any:
        self.capsys.readouterr()
        got = main([*command.split(), *map(str, argv), "--json"])
        out, err = self.capsys.readouterr()
        assert got == code, err
        data = json.loads(out)
        self.record(command, data)
        return data

    def record(self, command: str, data: Any) -> None:
        self.seen.setdefault(command, []).append(data)


@pytest.fixture
def outputs(capsys: pytest.CaptureFixture[str]) -> Outputs:
    return Outputs(capsys)


def manifest_commands(out: Outputs, tmp_path: Path, index: LocalIndex, monkeypatch: pytest.MonkeyPatch) -> Path:
    nb = tmp_path / "analysis.ipynb"
    out.run("init", nb, "alpha", "--index", index.url, "--python", "3.11")
    before = tmp_path / "before.ipynb"
    shutil.copyfile(nb, before)
    out.run("add", nb, "beta")
    out.run("diff", before, nb)
    out.run("remove", nb, "beta")
    out.run("lock", nb)
    out.run("lock", nb, "--check")
    out.run("show", nb)
    # `import` takes no --index: resolve on the local index so the test stays off the network.
    real = resolve_module.resolve
    monkeypatch.setattr(
        resolve_module, "resolve", lambda m, **kw: real(dataclasses.replace(m, index=index.url), **kw)
    )
    source = tmp_path / "requirements.txt"
    source.write_text("alpha\n")
    out.run("import", tmp_path / "imported.ipynb", source)
    monkeypatch.setattr(resolve_module, "resolve", real)
    return nb


def environment_commands(out: Outputs, nb: Path) -> None:
    out.run("sync", nb)
    out.run("check", nb)
    out.run("kernels list")
    out.run("envs list")
    out.run("envs gc", "--older-than", "0", "--dry-run")
    # No host answers on port 9 here: each host is reported, left out, in the same JSON (exit 3 and 1).
    unreachable = ("--hosts", "nobody@127.0.0.1:9", "--ssh-config", "/dev/null")
    out.run("hosts check", nb, *unreachable, code=3)
    out.run("hosts prepare", nb, *unreachable, code=1)


@contextlib.contextmanager
def serving(settings: Settings, tmp_path: Path, nb: Path) -> Iterator[process.RunningGateway]:
    """A recorded gateway that can run a real kernel (this interpreter's ipykernel)."""
    data_dir = tmp_path / "jupyter"
    write_spec(data_dir, "envsync-json", {"envsync": {"fingerprint": "sha256:test", "project": "json"}})
    gw = process.start(GatewaySpec("envsync-json", data_dir))
    try:
        registry.record(settings, gw, notebook=nb, project="json", fingerprint="sha256:test")
        yield gw
    finally:
        pids = children_of(gw.pid)
        end_by_pid(gw.pid)
        kill_pids(pids)


def status_command(out: Outputs, settings: Settings, tmp_path: Path, nb: Path) -> None:
    with serving(settings, tmp_path, nb) as gw:
        start_kernel(SimpleNamespace(url=gw.url, token=gw.token, pid=gw.pid))
        rows = out.run("status")
        assert rows and rows[0]["kernels"], rows  # the nested kernel rows are checked too


def next_json(lines: queue.Queue[str | None], timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        if line.strip():
            return json.loads(line)
    raise AssertionError("no JSON line from launch in time; stderr:\n" + log.read_text())


def launch_command(out: Outputs, nb: Path, settings: Settings, index: LocalIndex) -> None:
    """The ready line, then the event a lock rewritten while serving brings."""
    log = (nb.parent / "launch.log").open("w")
    env = {**os.environ, "ENVSYNC_HOME": str(settings.home), "ENVSYNC_ALLOWED_INDEXES": index.url}
    child = subprocess.Popen(
        [sys.executable, "-m", "envsync", "launch", str(nb), "--json", "--port", str(free_port())],
        env=env,
        cwd=nb.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    gateway_pid = 0
    try:
        ready = next_json(lines, READY_TIMEOUT, nb.parent / "launch.log")
        gateway_pid = ready["pid"]
        out.record("launch", ready)
        out.run("add", nb, "beta")
        event = next_json(lines, 30.0, nb.parent / "launch.log")
        assert event["event"] == "lock-changed"
        out.record("launch", event)
    finally:
        kernels = children_of(gateway_pid) if gateway_pid and alive(gateway_pid) else []
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                end_by_pid(child.pid)
                child.wait(timeout=10)
        kill_pids([p for p in (gateway_pid, *kernels) if p and alive(p)])
        reader.join(timeout=5)
        log.close()


def test_every_json_output_uses_kebab_case_keys_at_every_depth(
    tmp_path: Path,
    local_index: LocalIndex,
    settings: Settings,
    outputs: Outputs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nb = manifest_commands(outputs, tmp_path, local_index, monkeypatch)
    environment_commands(outputs, nb)
    status_command(outputs, settings, tmp_path, nb)
    launch_command(outputs, nb, settings, local_index)

    assert set(outputs.seen) == json_commands(build_parser())
    problems = {cmd: bad_keys(data) for cmd, data in outputs.seen.items() if bad_keys(data)}
    assert problems == {}
