"""A manifest the schema accepted once is accepted again without jsonschema; every refusal stays the schema's."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envsync.cli import main
from envsync.errors import ManifestError
from envsync.notebook import schema
from envsync.notebook.schema import VALID_FILE, remember_valid_in, validate_data

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.ipynb"


def quickstart_manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(QUICKSTART.read_text(encoding="utf-8"))["metadata"]["envsync"]
    return data


@pytest.fixture
def remembered(tmp_path: Path) -> Iterator[Path]:
    remember_valid_in(lambda: tmp_path)
    try:
        yield tmp_path
    finally:
        remember_valid_in(None)


def refusal(data: Any) -> str:
    with pytest.raises(ManifestError) as info:
        validate_data(data)
    return f"{info.value.message} | {info.value.hint}"


def test_an_accepted_manifest_is_not_validated_again(remembered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = quickstart_manifest()
    validate_data(data)
    assert len((remembered / VALID_FILE).read_text().split()) == 1

    def no_schema() -> Any:
        raise AssertionError("jsonschema was asked again")

    monkeypatch.setattr(schema, "_validator", no_schema)
    validate_data(copy.deepcopy(data))  # the same content, in a new object


def test_refusals_are_the_schemas_word_for_word_after_acceptances(remembered: Path) -> None:
    data = quickstart_manifest()
    bad_cases: list[dict[str, Any]] = []
    for change in (
        lambda d: d.update(project="Not A Slug"),
        lambda d: d["lock"]["packages"][0]["wheels"][0].update(hashes={"sha256": "zz"}),
        lambda d: d.update(extra=1),
        lambda d: d.update(dependencies="numpy"),
    ):
        bad = copy.deepcopy(data)
        change(bad)
        bad_cases.append(bad)
    remember_valid_in(None)
    expected = [refusal(b) for b in bad_cases]
    remember_valid_in(lambda: remembered)
    validate_data(data)
    assert [refusal(b) for b in bad_cases] == expected
    assert len((remembered / VALID_FILE).read_text().split()) == 1  # refusals are never remembered


def test_values_without_a_canonical_form_are_validated_every_time(remembered: Path) -> None:
    data = quickstart_manifest()
    data["version"] = float("nan")
    first = refusal(data)
    assert refusal(data) == first
    assert not (remembered / VALID_FILE).exists()


def test_a_changed_schema_forgets_what_it_accepted(remembered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    validate_data(quickstart_manifest())
    monkeypatch.setattr(schema, "_schema_bytes", lambda: b'{"type": "object"}')
    assert schema._content_key(quickstart_manifest()) not in (remembered / VALID_FILE).read_text().split()


def test_the_cli_remembers_in_the_state_folder_and_refuses_an_edit(tmp_path: Path) -> None:
    nb = tmp_path / "quick.ipynb"
    shutil.copy(QUICKSTART, nb)
    home = tmp_path / "home"
    assert main(["--home", str(home), "lock", "--check", str(nb)]) == 0
    assert len((home / "state" / VALID_FILE).read_text().split()) == 1
    body = json.loads(nb.read_text(encoding="utf-8"))
    body["metadata"]["envsync"]["project"] = "Not A Slug"
    nb.write_text(json.dumps(body), encoding="utf-8")
    assert main(["--home", str(home), "lock", "--check", str(nb)]) == 1
    assert len((home / "state" / VALID_FILE).read_text().split()) == 1
