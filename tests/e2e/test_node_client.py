"""@jupyterlab/services under Node (no browser) against the gateway of `envsync launch`."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.network]


def test_node_client_runs_in_the_envsync_env(node, launched, quickstart_lock, run_node):
    report = run_node(
        "node_client.mjs", launched.url, env={"ENVSYNC_GATEWAY_TOKEN": launched.token}, timeout=150
    )
    assert report["_returncode"] == 0 and "error" not in report, report

    # The token is required on HTTP and on the kernel WebSocket; the client sent it on both.
    assert report["http_without_token"] in (401, 403), report
    assert report["websocket_without_token"] in ("refused 401", "refused 403"), report

    # Only the project kernel is offered, and it carries the lock's fingerprint.
    assert report["kernelspecs"] == [quickstart_lock.kernel_name]
    assert report["kernel_name"] == quickstart_lock.kernel_name
    assert report["fingerprint"] == quickstart_lock.fingerprint == launched.info["fingerprint"]

    # The kernel runs the interpreter of an env in envsync's store, with the locked numpy.
    assert report["execute_status"] == ["ok", "ok"]
    executable = Path(report["sys_executable"])
    assert executable.is_absolute()
    # Not resolve() on the interpreter itself: a venv's python is a symlink to the base one.
    env_dir = executable.parent.parent.resolve()
    assert env_dir.parent == launched.envs_dir.resolve(), (executable, launched.envs_dir)
    if "env" in launched.info:
        assert env_dir == Path(launched.info["env"]).resolve()
    assert report["numpy_version"] == quickstart_lock.numpy_version

    # It shut its kernel down, and the gateway agrees.
    assert report["kernel_id"] in report["running_before_shutdown"]
    assert report["running_after_shutdown"] == []
    assert launched.wait_no_kernels() == []
