"""The notebook's lock flows from the web page into the running env, and only when allowed.

Two locks of one project differ in one small package (idna 3.10 → 3.11), resolved from the
public index with a real ipykernel: kernels must really start and import it. The page sends
the newer lock; `envsync launch --lock-updates accept` builds it, new kernels run it and a
kernel started before keeps the old env. `--lock-updates refuse`, a lock for another project
and a hostile lock change nothing, and the page says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.manifests import manifest_of, refresh_fingerprint, tamper_first_hash
from tests.support.gateway_client import auth, run_code, start_kernel

pytestmark = [pytest.mark.network, pytest.mark.browser]

CODE = "import idna; print(idna.__version__)"
OLD, NEW = "3.10", "3.11"
CLI_TIMEOUT = 300.0


def envsync(home: Path, *argv: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "envsync", *map(str, argv)],
        env={**os.environ, "ENVSYNC_HOME": str(home)},
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"envsync {argv[0]} failed:\n{done.stderr[-3000:]}"


@dataclass(frozen=True)
class Locks:
    folder: Path
    home: Path

    def notebook(self, project: str, version: str) -> Path:
        return self.folder / f"{project}-{version}.ipynb"

    def manifest(self, project: str, version: str) -> dict[str, Any]:
        return manifest_of(self.notebook(project, version))

    def fingerprint(self, project: str, version: str) -> str:
        return str(self.manifest(project, version)["lock"]["tool"]["envsync"]["fingerprint"])

    def copy(self, project: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / f"{project}.ipynb"
        shutil.copyfile(self.notebook(project, version), path)
        return path


@pytest.fixture(scope="module")
def locks(tmp_path_factory: pytest.TempPathFactory) -> Locks:
    """editordemo, refusedemo and otherdemo, each locked with idna 3.10 and with idna 3.11."""
    folder = tmp_path_factory.mktemp("editor-locks")
    found = Locks(folder, folder / "home")
    for project in ("editordemo", "refusedemo", "otherdemo"):
        old = found.notebook(project, OLD)
        envsync(
            found.home,
            "init",
            old,
            "--python",
            "3.11",
            "--project",
            project,
            "--environment",
            "linux-x86_64",
            f"idna=={OLD}",
        )
        new = found.notebook(project, NEW)
        shutil.copyfile(old, new)
        envsync(found.home, "add", new, f"idna=={NEW}")
    return found


@pytest.fixture(scope="module")
def editor_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("editor-home")


@pytest.fixture(scope="module")
def accepting(locks, editor_home, client_site, tmp_path_factory, launcher) -> Iterator[Any]:
    """`envsync launch editordemo.ipynb --lock-updates accept` (idna 3.10)."""
    workdir = tmp_path_factory.mktemp("launch-accept")
    with launcher(
        locks.copy("editordemo", OLD, workdir),
        editor_home,
        client_site.origin,
        workdir,
        ("--lock-updates", "accept"),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def refusing(locks, editor_home, client_site, tmp_path_factory, launcher) -> Iterator[Any]:
    """`envsync launch refusedemo.ipynb --lock-updates refuse` (idna 3.10)."""
    workdir = tmp_path_factory.mktemp("launch-refuse")
    with launcher(
        locks.copy("refusedemo", OLD, workdir),
        editor_home,
        client_site.origin,
        workdir,
        ("--lock-updates", "refuse"),
    ) as running:
        yield running


def env_state(gw: Any) -> dict[str, Any]:
    response = gw.get("/api/envsync")
    assert response.status_code == 200, response.text
    return dict(response.json())


def page(client_url: Callable[..., str], origin: str, gw: Any, manifest: dict[str, Any]) -> str:
    return client_url(origin, connection=gw.connection, manifest=json.dumps(manifest), code=CODE)


def test_lock_sent_from_the_page_is_built_and_only_new_kernels_run_it(
    accepting, locks, client_site, open_client, client_url, artifacts
):
    old_fp, new_fp = locks.fingerprint("editordemo", OLD), locks.fingerprint("editordemo", NEW)
    assert old_fp != new_fp
    before = env_state(accepting)
    assert (before["state"], before["fingerprint"], before["lock-updates"]) == ("ready", old_fp, "accept")
    old_kernel = start_kernel(accepting, {"name": "envsync-editordemo"})["id"]
    assert run_code(accepting, old_kernel, CODE).strip() == OLD

    report = open_client(
        page(client_url, client_site.origin, accepting, locks.manifest("editordemo", NEW)),
        "--send-lock",
        "--rerun",
        screenshot=artifacts / "browser-client-lock-sent.png",
    )

    first = report["first"]
    assert first["state"] == "mismatch", first  # nothing ran on the old env
    assert first["env_state_state"] == "ready" and first["send_lock_offered"], first
    assert f"~ idna {OLD} → {NEW} (upgraded)" in first["diff"], first["diff"]
    assert report["lock_result_state"] == "ready", report
    assert new_fp in report["lock_result"], report["lock_result"]
    assert report["state"] == "done", report
    assert report["result"] == NEW, report  # a kernel started after the switch runs the new env
    assert report["fingerprint"] == new_fp and report["match"] == "match"
    assert report["diff"] == "same lock", report["diff"]

    assert run_code(accepting, old_kernel, CODE).strip() == OLD  # the running kernel kept its env
    after = env_state(accepting)
    assert (after["state"], after["fingerprint"]) == ("ready", new_fp)
    assert {"id": old_kernel, "fingerprint": old_fp} in after["kernels"], after["kernels"]
    assert {"name": "idna", "version": NEW} in after["packages"]
    # The next launch starts from the lock the editor sent.
    assert manifest_of(accepting.notebook) == locks.manifest("editordemo", NEW)
    requests.delete(f"{accepting.url}/api/kernels/{old_kernel}", headers=auth(accepting), timeout=30)


def assert_unchanged(gw: Any, state: dict[str, Any], notebook_bytes: bytes, envs: set[str]) -> None:
    now = env_state(gw)
    assert (now["state"], now["fingerprint"]) == (state["state"], state["fingerprint"]), now
    assert gw.notebook.read_bytes() == notebook_bytes, "the notebook changed"
    assert {p.name for p in gw.envs_dir.iterdir()} == envs, "an env was built"


def send_from_page(open_client, url: str, shot: Path) -> dict[str, Any]:
    report = open_client(url, "--send-lock", screenshot=shot)
    assert report["first"]["send_lock_offered"], report
    return report


def test_refusing_launch_changes_nothing_and_the_page_says_so(
    refusing, locks, client_site, open_client, client_url, artifacts
):
    state, data = env_state(refusing), refusing.notebook.read_bytes()
    envs = {p.name for p in refusing.envs_dir.iterdir()}
    assert state["lock-updates"] == "refuse"

    report = send_from_page(
        open_client,
        page(client_url, client_site.origin, refusing, locks.manifest("refusedemo", NEW)),
        artifacts / "browser-client-lock-refused.png",
    )

    assert report["lock_result_state"] == "refused", report
    assert report["lock_result"].startswith("refused (403): "), report["lock_result"]
    assert_unchanged(refusing, state, data, envs)


def _foreign(locks: Locks) -> dict[str, Any]:
    return locks.manifest("otherdemo", NEW)


def _tampered(locks: Locks) -> dict[str, Any]:
    manifest = locks.manifest("editordemo", NEW)
    tamper_first_hash(manifest, "idna")  # the fingerprint no longer matches the lock
    return manifest


def _url_dependency(locks: Locks) -> dict[str, Any]:
    manifest = locks.manifest("editordemo", NEW)
    manifest["dependencies"] = ["idna @ https://evil.example/idna-3.11-py3-none-any.whl"]
    refresh_fingerprint(manifest)
    return manifest


@pytest.mark.parametrize(
    ("make", "answer"),
    [(_foreign, "refused (409): "), (_tampered, "rejected (400): "), (_url_dependency, "rejected (400): ")],
    ids=["other-project", "tampered-hash", "url-dependency"],
)
def test_foreign_or_hostile_lock_changes_nothing(
    make, answer, accepting, locks, client_site, open_client, client_url, artifacts
):
    state, data = env_state(accepting), accepting.notebook.read_bytes()
    envs = {p.name for p in accepting.envs_dir.iterdir()}

    report = send_from_page(
        open_client,
        page(client_url, client_site.origin, accepting, make(locks)),
        artifacts / f"browser-client-lock-{make.__name__.strip('_')}.png",
    )

    assert report["lock_result_state"] == "refused", report
    assert report["lock_result"].startswith(answer), report["lock_result"]
    assert report["state"] in ("mismatch", "done"), report
    if make is _foreign:
        assert "project: editordemo (gateway) → otherdemo (notebook)" in report["first"]["diff"], report
    assert_unchanged(accepting, state, data, envs)


def test_page_says_verified_only_while_the_files_match(
    locks, client_site, tmp_path, launcher, open_client, client_url, artifacts
):
    workdir = tmp_path / "launch"
    home = tmp_path / "home"  # an env of its own: this test edits a file in it
    with launcher(locks.copy("editordemo", OLD, workdir), home, client_site.origin, workdir) as gw:
        url = client_url(client_site.origin, connection=gw.connection, code=CODE)
        clean = open_client(url)
        assert clean["state"] == "done" and clean["result"] == OLD, clean
        assert clean["verified_state"] == "verified", clean
        assert clean["verified"].startswith("verified: "), clean["verified"]

        edited = next(Path(gw.info["env"]).glob("lib/python3.*/site-packages/idna/__init__.py"))
        edited.write_text(edited.read_text() + "\n# edited in place\n")
        report = open_client(url, "--rerun", screenshot=artifacts / "browser-client-env-modified.png")

    # The first run still showed the last clean check; its kernel start found the edit.
    assert report["first"]["state"] == "error", report["first"]
    assert "409" in report["first"]["status"], report["first"]["status"]
    assert report["state"] == "error" and report["result"] == "", report
    assert report["verified_state"] == "modified", report
    assert report["verified"].startswith("NOT verified: ") and "idna/__init__.py" in report["verified"], (
        report
    )
