"""One rule per kind of untrusted value: the schema, the lock, the kernels and the CLI agree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from envsync import rules
from envsync.cli import main
from envsync.errors import ManifestError
from envsync.notebook.schema import schema_path
from tests.manifests import edit_manifest

_ONE_LINE = "^(?![\\s\\S]*\\n)"


def _schema() -> dict[str, object]:
    data = json.loads(schema_path().read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_the_schema_uses_the_same_patterns_as_the_code() -> None:
    schema = _schema()
    props = schema["properties"]
    defs = schema["$defs"]
    assert isinstance(props, dict) and isinstance(defs, dict)
    assert props["project"]["pattern"] == _ONE_LINE + rules.PROJECT_SLUG + "$"
    assert props["index"]["pattern"] == _ONE_LINE + rules.INDEX_URL + "$"
    package = defs["package"]["properties"]
    assert package["name"]["pattern"] == _ONE_LINE + rules.PACKAGE_NAME + "$"
    assert package["index"]["pattern"] == _ONE_LINE + rules.INDEX_URL + "$"
    assert defs["artifact"]["properties"]["name"]["pattern"] == _ONE_LINE + rules.ARTIFACT_FILE + "$"
    assert defs["sha256"]["pattern"] == "^" + rules.SHA256 + "$"
    envsync_tool = defs["lock"]["properties"]["tool"]["properties"]["envsync"]["properties"]
    assert envsync_tool["fingerprint"]["pattern"] == "^" + rules.DIGEST + "$"
    assert envsync_tool["inputs"]["pattern"] == "^" + rules.DIGEST + "$"


@pytest.mark.parametrize(
    ("predicate", "good", "bad"),
    [
        (rules.is_project_slug, ["a", "sales-forecast", "x" * 64], ["", "-a", "a-", "A", "a/b", "a\n", "x" * 65]),
        (rules.is_kernel_name, ["envsync-a", "python3", "a.b_c-d"], ["", ".", "..", "-x", "a/b", "a b", "a\n"]),
        (rules.is_package_name, ["numpy", "zope.interface", "a_b-c"], ["", "-x", "x-", "a b", "a\n", "a" * 201]),
        (rules.is_sha256, ["0" * 64, "ab" * 32], ["0" * 63, "AB" * 32, "g" * 64, "0" * 64 + "\n"]),
        (
            rules.is_index_url,
            ["https://pypi.org/simple", "http://127.0.0.1:8080/simple/"],
            ["file:///etc/passwd", "https://x/ y", 'https://x/"', "https://x/'", "https://x/\\", "https://x\n"],
        ),
        (
            rules.is_artifact_file,
            ["numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", "pkg-1.0.tar.gz"],
            ["../x.whl", "x/y.whl", "x.exe", ".x.whl"],
        ),
    ],
)
def test_each_rule_accepts_the_usual_and_refuses_what_could_escape(predicate, good, bad) -> None:  # type: ignore[no-untyped-def]
    assert all(predicate(v) for v in good), [v for v in good if not predicate(v)]
    assert not any(predicate(v) for v in bad), [v for v in bad if predicate(v)]
    assert not predicate(None) and not predicate(3)


def test_check_project_names_the_bad_slug_and_how_to_fix_it() -> None:
    with pytest.raises(ManifestError) as info:
        rules.check_project("../../etc")
    assert "'../../etc' is not a valid slug" in info.value.message
    assert info.value.hint and "lowercase letters" in info.value.hint


@pytest.mark.parametrize("command", [["show"], ["lock", "--check"], ["check"], ["export", "--format", "requirements"]])
def test_a_package_index_with_a_quote_is_refused_by_every_command_on_read(
    command: list[str], locked_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "nb.ipynb"
    shutil.copy(locked_template, nb)
    edit_manifest(nb, lambda m: m["lock"]["packages"][0].__setitem__("index", "https://evil.example/simple\"--x"))
    before = nb.read_bytes()
    code = main([command[0], str(nb), *command[1:]])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("ERROR metadata.envsync.lock.packages[0].index"), err
    assert nb.read_bytes() == before


@given(st.text(alphabet="AbZz09-_.~ ", max_size=12))
def test_canonical_name_is_packagings_rule(name: str) -> None:
    assert rules.canonical_name(name) == canonicalize_name(name)
