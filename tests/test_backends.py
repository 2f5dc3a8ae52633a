"""Installer backends, the hashed requirements file, and interpreter discovery."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment

from envsync import proc
from envsync.env import drift, interpreters
from envsync.env import installers as backends
from envsync.env.sync import sync
from envsync.errors import LockError, UsageError
from envsync.lock.model import Artifact, LockedPackage
from tests.envhelpers import make_lock, settings_at
from tests.wheelhouse import LocalIndex

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_hashed_requirements_pins_every_artifact_hash() -> None:
    pkgs = [
        LockedPackage("Zeta_Pkg", "2.0", wheels=(Artifact("z-1.whl", SHA_B), Artifact("z-2.whl", SHA_A))),
        LockedPackage("alpha", "1.0.0", sdist=Artifact("alpha-1.0.0.tar.gz", SHA_A)),
    ]
    assert backends.hashed_requirements(pkgs) == (
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
        backends.hashed_requirements([pkg])


def test_index_urls_must_be_plain_http_urls() -> None:
    assert backends.check_index_url("https://pypi.org/simple") == "https://pypi.org/simple"
    for bad in ("--extra-index-url=x", "file:///etc", "https://x y", "https://x\n"):
        with pytest.raises(LockError):
            backends.check_index_url(bad)


def test_choose_backend_takes_uv_by_default_and_pip_when_asked() -> None:
    assert backends.choose_backend(None).name == "uv"
    assert backends.choose_backend("uv").name == "uv"
    assert backends.choose_backend("pip").name == "pip"
    with pytest.raises(UsageError, match="unknown installer backend"):
        backends.choose_backend("conda")


def test_choose_backend_falls_back_to_pip_when_uv_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import uv

    monkeypatch.setattr(uv, "find_uv_bin", lambda: "/nonexistent/uv")
    backends._runnable_uv.cache_clear()
    try:
        assert backends.choose_backend(None).name == "pip"
    finally:
        monkeypatch.undo()
        backends._runnable_uv.cache_clear()


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
