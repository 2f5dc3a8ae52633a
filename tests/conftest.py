from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from envsync.settings import Settings
from tests.wheelhouse import LocalIndex, standard_index


@pytest.fixture(scope="session")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    """A PEP 503 index on 127.0.0.1 with tiny real wheels (see tests/wheelhouse.py)."""
    index = standard_index(tmp_path_factory.mktemp("index"))
    yield index
    index.stop()


@pytest.fixture
def settings(tmp_path: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with a private home, the local index allowed, and no network index by accident."""
    home = tmp_path / "home"
    monkeypatch.setenv("ENVSYNC_HOME", str(home))
    monkeypatch.setenv("ENVSYNC_ALLOWED_INDEXES", local_index.url)
    return Settings(home=home, allowed_indexes=(local_index.url,))


@pytest.fixture
def no_uv_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """uv gives up on an unreachable index at once, instead of after its retries' back-off (~6 s)."""
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")


@pytest.fixture(scope="session")
def locked_template(tmp_path_factory: pytest.TempPathFactory, local_index: LocalIndex) -> Path:
    """One notebook locked against the local index (`alpha` declared), copied by tests."""
    from envsync.cli import main

    folder = tmp_path_factory.mktemp("locked-template")
    path = folder / "analysis.ipynb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENVSYNC_HOME", str(folder / "home"))
        mp.setenv("ENVSYNC_ALLOWED_INDEXES", local_index.url)
        assert main(["init", str(path), "alpha", "--index", local_index.url, "--python", "3.11"]) == 0
    return path


RELIABILITY = Path(__file__).resolve().parent / "reliability"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The reliability suite takes minutes: mark it `slow`, so a plain `pytest` leaves it out."""
    # tryfirst: the marks must be on the items before `-m` selects among them.
    for item in items:
        if RELIABILITY in item.path.parents:
            item.add_marker(pytest.mark.slow)
