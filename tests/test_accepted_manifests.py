"""A manifest accepted once is read again without jsonschema or packaging; every refusal stays the checks'."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envsync.cli import main
from envsync.errors import EnvsyncError
from envsync.notebook import accepted, schema
from envsync.notebook.accepted import ACCEPTED_FILE, remember_in
from envsync.notebook.manifest import parse_manifest
from tests.support.processes import child_env

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.ipynb"


def quickstart_manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(QUICKSTART.read_text(encoding="utf-8"))["metadata"]["envsync"]
    return data


def kept(folder: Path) -> list[str]:
    return (folder / ACCEPTED_FILE).read_text().splitlines()


@pytest.fixture
def remembered(tmp_path: Path) -> Iterator[Path]:
    remember_in(lambda: tmp_path)
    try:
        yield tmp_path
    finally:
        remember_in(None)


def refusal(data: Any) -> str:
    with pytest.raises(EnvsyncError) as info:
        parse_manifest(data)
    return f"{type(info.value).__name__}: {info.value.message} | {info.value.hint}"


def test_an_accepted_manifest_is_read_again_as_it_was_read_first(
    remembered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = quickstart_manifest()
    first = parse_manifest(data)
    assert len(kept(remembered)) == 1

    def asked(*_args: Any) -> Any:
        raise AssertionError("a check ran again on content accepted before")

    monkeypatch.setattr(schema, "_validator", asked)
    monkeypatch.setattr("envsync.notebook.manifest.normalize_requirement", asked)
    monkeypatch.setattr("envsync.lock.model._check_marker", asked)
    monkeypatch.setattr("envsync.lock.model.compute_inputs", asked)
    again = parse_manifest(copy.deepcopy(data))  # the same content, in a new object
    assert again == first
    assert again.inputs == first.inputs
    assert not again.lock_is_stale


def test_a_second_command_imports_neither_jsonschema_nor_packagings_parsers(tmp_path: Path) -> None:
    nb = tmp_path / "quick.ipynb"
    shutil.copy(QUICKSTART, nb)
    probe = (
        "import sys\n"
        "from envsync.cli import main\n"
        f"code = main(['--home', {str(tmp_path / 'home')!r}, 'check', {str(nb)!r}])\n"
        "heavy = [m for m in ('jsonschema', 'packaging.markers', 'packaging.requirements',"
        " 'packaging.specifiers', 'packaging.version') if m in sys.modules]\n"
        "print('exit', code, 'loaded', *heavy)\n"
    )
    first, second = (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=child_env(), check=True)
        for _ in range(2)
    )
    # No env is built here, so both end at the same refusal, after reading the manifest.
    assert "no environment for this lock yet" in first.stderr and first.stderr == second.stderr
    assert first.stdout.startswith("exit 3 loaded jsonschema packaging.markers")  # the first read checks all
    assert second.stdout.strip() == "exit 3 loaded", second.stdout  # the second needs neither library


def test_refusals_are_the_checks_word_for_word_after_acceptances(remembered: Path) -> None:
    data = quickstart_manifest()
    bad_cases: list[dict[str, Any]] = []
    for change in (
        lambda d: d.update(project="Not A Slug"),
        lambda d: d["lock"]["packages"][0]["wheels"][0].update(hashes={"sha256": "zz"}),
        lambda d: d.update(extra=1),
        lambda d: d.update(dependencies="numpy"),
        lambda d: d.update(dependencies=["numpy", "numpy>=2"]),
        lambda d: d["lock"]["packages"][0].update(marker="python_version ~= '3'"),
        lambda d: d["lock"]["packages"][0].update(version="not a version"),
        lambda d: d["lock"]["tool"]["envsync"].update(fingerprint="sha256:" + "0" * 64),
    ):
        bad = copy.deepcopy(data)
        change(bad)
        bad_cases.append(bad)
    remember_in(None)
    expected = [refusal(b) for b in bad_cases]
    remember_in(lambda: remembered)
    parse_manifest(data)
    assert [refusal(b) for b in bad_cases] == expected
    assert [refusal(b) for b in bad_cases] == expected  # and again: refusals are never kept
    assert len(kept(remembered)) == 1


def test_values_without_a_canonical_form_are_checked_every_time(remembered: Path) -> None:
    data = quickstart_manifest()
    data["version"] = float("nan")
    first = refusal(data)
    assert refusal(data) == first
    assert not (remembered / ACCEPTED_FILE).exists()


def test_another_schema_or_other_checking_code_forgets_what_was_accepted(
    remembered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = quickstart_manifest()
    parse_manifest(data)
    key = accepted.content_key(data)
    assert key is not None and kept(remembered)[0].startswith(key)
    monkeypatch.setattr(schema, "schema_bytes", lambda: b'{"type": "object"}')
    assert accepted.content_key(data) != key
    monkeypatch.undo()
    monkeypatch.setattr(accepted, "_code_stamp", lambda: b"envsync 99")
    assert accepted.content_key(data) != key
    assert accepted.recall(data)[1] is None


def test_a_damaged_record_line_means_a_full_check(remembered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = quickstart_manifest()
    parse_manifest(data)
    key = accepted.content_key(data)
    (remembered / ACCEPTED_FILE).write_text(f"{key}\tsha256:x\t[not json\n")
    calls: list[int] = []
    real = schema._validator
    monkeypatch.setattr(schema, "_validator", lambda: calls.append(1) or real())
    assert parse_manifest(data) == parse_manifest(copy.deepcopy(data))
    assert calls  # checked in full, and kept again
    assert accepted.recall(data)[1] is not None


def test_the_cli_remembers_in_the_state_folder_and_refuses_an_edit(tmp_path: Path) -> None:
    nb = tmp_path / "quick.ipynb"
    shutil.copy(QUICKSTART, nb)
    home = tmp_path / "home"
    assert main(["--home", str(home), "lock", "--check", str(nb)]) == 0
    assert len(kept(home / "state")) == 1
    body = json.loads(nb.read_text(encoding="utf-8"))
    body["metadata"]["envsync"]["project"] = "Not A Slug"
    nb.write_text(json.dumps(body), encoding="utf-8")
    assert main(["--home", str(home), "lock", "--check", str(nb)]) == 1
    assert len(kept(home / "state")) == 1


def test_a_forged_acceptance_does_not_let_a_bad_project_index_or_target_through(remembered: Path) -> None:
    good = parse_manifest(quickstart_manifest())
    for change in (
        lambda d: d.update(project="../../etc"),
        lambda d: d.update(index="https://example.org/simple' --trusted-host x"),
        lambda d: d.update(environments=["linux-x86_64", "plan9"]),
    ):
        bad = quickstart_manifest()
        change(bad)
        accepted.keep(accepted.content_key(bad), accepted.Accepted(good.dependencies, good.inputs))
        assert accepted.recall(bad)[1] is not None  # as if the state folder had been written by someone else
        with pytest.raises(EnvsyncError):
            parse_manifest(bad)
