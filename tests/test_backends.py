"""Installer backends, the hashed requirements file, and interpreter discovery."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.markers import default_environment

from envsync import proc, uv
from envsync.cli import main
from envsync.env import drift, installers, interpreters, inventory
from envsync.errors import InstallError, LockError, ToolError, UsageError
from envsync.formats.hashed import hashed_requirements
from envsync.lock.model import Artifact, LockedPackage
from envsync.ops.sync import ProgressEvent, sync
from envsync.settings import Settings
from tests.envhelpers import make_lock, settings_at
from tests.wheelhouse import LocalIndex

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_hashed_requirements_pins_every_artifact_hash() -> None:
    pkgs = [
        LockedPackage("Zeta_Pkg", "2.0", wheels=(Artifact("z-1.whl", SHA_B), Artifact("z-2.whl", SHA_A))),
        LockedPackage("alpha", "1.0.0", sdist=Artifact("alpha-1.0.0.tar.gz", SHA_A)),
    ]
    assert hashed_requirements(pkgs) == (
        f"alpha==1.0.0 \\\n    --hash=sha256:{SHA_A}\n"
        f"zeta-pkg==2.0 \\\n    --hash=sha256:{SHA_A} \\\n    --hash=sha256:{SHA_B}\n"
    )


@pytest.mark.parametrize(
    "pkg",
    [
        LockedPackage("--index-url=http://evil", "1.0", wheels=(Artifact("x.whl", SHA_A),)),
        LockedPackage("alpha\n--index-url", "1.0", wheels=(Artifact("x.whl", SHA_A),)),
        LockedPackage("alpha", "1.0 --hash=sha256:" + SHA_B, wheels=(Artifact("x.whl", SHA_A),)),
        LockedPackage("alpha", "1.0", wheels=(Artifact("x.whl", "0" * 63 + "\n"),)),
        LockedPackage("alpha", "1.0"),
    ],
)
def test_hashed_requirements_refuses_what_could_smuggle_an_option(pkg: LockedPackage) -> None:
    with pytest.raises(LockError):
        hashed_requirements([pkg])


def test_index_urls_must_be_plain_http_urls() -> None:
    assert installers.check_index_url("https://pypi.org/simple") == "https://pypi.org/simple"
    for bad in ("--extra-index-url=x", "file:///etc", "https://x y", "https://x\n"):
        with pytest.raises(LockError):
            installers.check_index_url(bad)


def test_choose_backend_takes_uv_by_default_and_pip_when_asked() -> None:
    assert installers.choose(None).name == "uv"
    assert installers.choose("uv").name == "uv"
    assert installers.choose("pip").name == "pip"
    with pytest.raises(UsageError, match="unknown installer backend"):
        installers.choose("conda")


def test_choose_backend_falls_back_to_pip_when_uv_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import uv

    monkeypatch.setattr(uv, "find_uv_bin", lambda: "/nonexistent/uv")
    installers.runnable_binary.cache_clear()
    try:
        assert installers.choose(None).name == "pip"
    finally:
        monkeypatch.undo()
        installers.runnable_binary.cache_clear()


def test_both_backends_install_the_same_distributions(tmp_path: Path, local_index: LocalIndex) -> None:
    lock = make_lock(local_index)
    got = {}
    for name in ("uv", "pip"):
        settings = settings_at(tmp_path / name, local_index.url)
        result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, backend=name)
        assert result.backend == name and result.drift.clean
        seed = set(result.drift.ignored)
        got[name] = {k: v for k, v in drift.installed(result.env).items() if k not in seed}
    assert (
        got["uv"] == got["pip"] == {"alpha": "1.1.0", "beta": "1.0.0", "comm": "0.2.0", "ipykernel": "6.0.0"}
    )


def test_pip_backend_reports_progress_that_moves(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    events: list[ProgressEvent] = []
    result = sync(
        lock=make_lock(local_index), project="demo", notebook=Path("n.ipynb"), settings=settings,
        backend="pip", progress=events.append,
    )
    assert result.backend == "pip" and result.drift.clean
    counted = [e for e in events if e.phase == "install" and e.done]
    assert [(e.done, e.total) for e in counted] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert sorted(e.message.split()[1] for e in counted) == [
        "alpha==1.1.0", "beta==1.0.0", "comm==0.2.0", "ipykernel==6.0.0"
    ]
    assert any(e.phase == "download" for e in events)


def test_uv_command_lines_carry_the_shared_flags_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert uv.command("pip", "sync", offline=True, binary="/bin/uv") == [
        "/bin/uv", "pip", "sync", "--no-config", "--no-python-downloads", "--offline"
    ]
    ran: list[list[str]] = []
    monkeypatch.setattr(proc, "run", lambda argv, **_k: ran.append([str(a) for a in argv]))
    uv_installer = installers.UvInstaller("/bin/uv")
    uv_installer.create(tmp_path / "env", Path("/usr/bin/python3"))
    uv_installer.install(tmp_path / "env", tmp_path / "r.txt", indexes=["https://a.example/simple"], offline=True)
    uv_installer.uninstall(tmp_path / "env", ["alpha"])
    for argv in ran:
        assert argv[0] == "/bin/uv"
        assert argv.count("--no-config") == 1 and argv.count("--no-python-downloads") == 1
    assert ran[1][1:3] == ["pip", "sync"] and "--offline" in ran[1] and "--require-hashes" in ran[1]


def test_pip_counts_one_step_for_each_package_of_the_file() -> None:
    pip = installers.PipInstaller()
    steps = [
        pip.progress(line)
        for line in (
            "Looking in indexes: http://127.0.0.1:1/simple",
            "Collecting alpha==1.1.0 (from -r r.txt (line 1))",
            "  Downloading alpha-1.1.0-py3-none-any.whl (955 bytes)",
            "Requirement already satisfied: beta==1.0.0 in /env/lib (from -r r.txt (line 3)) (1.0.0)",
            "",
            "Installing collected packages: alpha",
        )
    ]
    kinds = [step.kind if step else None for step in steps]
    assert kinds == ["message", "installed", "download", "installed", None, "message"]


def test_pip_backend_names_the_package_whose_hash_did_not_match(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index, hashes={"alpha": "ab" * 32})
    with pytest.raises(InstallError) as err:
        sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, backend="pip")
    assert err.value.message.startswith("hash mismatch for alpha==1.1.0: ")
    assert inventory.list_envs(settings) == []


UV_MISMATCH = """\
  × Failed to download `alpha==1.1.0`
  ├─▶ Failed to read from the distribution cache
  ╰─▶ Hash mismatch for `alpha==1.1.0`

      Expected:
        sha256:abababababababababababababababababababababababababababababababab

      Computed:
        sha256:c24102060c7db8df5eb16dc35e3eca2aa6b51b8bf7ccb43ae9617f24d87b66bb
"""
PIP_MISMATCH = """\
ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated \
the package versions, please update the hashes. Otherwise, examine the package contents carefully; \
someone may have tampered with them.
    alpha==1.1.0 from http://127.0.0.1:1/files/alpha-1.1.0-py3-none-any.whl#sha256=c241 (from -r r.txt (line 1)):
        Expected sha256 abababababababababababababababababababababababababababababababab
             Got        c24102060c7db8df5eb16dc35e3eca2aa6b51b8bf7ccb43ae9617f24d87b66bb
"""


@pytest.mark.parametrize(("installer", "stderr"), [(installers.UvInstaller, UV_MISMATCH), (installers.PipInstaller, PIP_MISMATCH)])
def test_each_installer_names_the_package_whose_hash_did_not_match(
    installer: Callable[[], installers.Installer], stderr: str
) -> None:
    failed = ToolError("install failed (exit 1)", returncode=1, stderr=stderr)
    err = installer().explain(failed, 4)
    assert err.message.startswith("hash mismatch for alpha==1.1.0: ")
    assert "envsync lock --upgrade" in (err.hint or "") and err.detail == stderr
    full = ToolError("install failed (exit 1)", returncode=1, stderr="error: No space left on device (os error 28)")
    other = installer().explain(full, 4)
    assert other.message == f"installing 4 packages with {installer().name} failed: install failed (exit 1)"
    assert "disk" in (other.hint or "")


def test_registry_names_are_the_choices_of_sync_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert installers.names() == ["uv", "pip"]
    monkeypatch.setattr(installers, "INSTALLERS", {**installers.INSTALLERS, "spare": installers.PipInstaller})
    capsys.readouterr()
    assert main(["sync", "--help"]) == 0
    assert "--backend {uv,pip,spare}" in capsys.readouterr().out
    assert installers.get("spare").name == "pip"


@pytest.mark.parametrize("how", ["option", "environment"])
def test_unknown_backend_exits_2_with_one_line(
    how: str, tmp_path: Path, locked_template: Path, settings: Settings,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    nb = tmp_path / "analysis.ipynb"
    shutil.copy(locked_template, nb)
    argv = ["sync", str(nb)]
    if how == "option":
        argv += ["--backend", "conda"]
    else:
        monkeypatch.setenv("ENVSYNC_BACKEND", "conda")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "conda" in errors[0], err
    assert "Traceback" not in err
    assert inventory.list_envs(settings) == []


def test_interpreter_reports_its_marker_environment_like_packaging_does() -> None:
    found = interpreters.describe(Path(sys.executable))
    assert found.marker_env == {k: str(v) for k, v in default_environment().items()}
    assert found.tag == f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert found.version == found.marker_env["python_full_version"]


def test_find_returns_an_interpreter_inside_the_range() -> None:
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = interpreters.find(f"=={minor}.*")
    assert found.minor == minor and found.path.exists()


def test_interpreter_choice_is_remembered_until_that_interpreter_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "interpreters.json"
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    first = interpreters.find(f"=={minor}.*", cache=cache)

    def no_subprocess(*_a: object, **_k: object) -> None:
        raise AssertionError("a remembered interpreter needs no discovery")

    with monkeypatch.context() as m:
        m.setattr(proc, "run", no_subprocess)
        assert interpreters.find(f"=={minor}.*", cache=cache) == first

    data = json.loads(cache.read_text())
    data[f"=={minor}.*|"]["stat"][2] -= 1  # as if the interpreter had been upgraded in place
    cache.write_text(json.dumps(data))
    calls = []
    real_run = proc.run
    monkeypatch.setattr(proc, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    assert interpreters.find(f"=={minor}.*", cache=cache) == first
    assert calls  # asked again
