"""The manifest JSON Schema (schemas/envsync-manifest-v1.schema.json) and the manifest reader agree.

Valid manifests (examples/, the ones `envsync init` writes, hand-built ones) pass the schema
checked with jsonschema directly; broken ones fail both the schema and `parse_manifest`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from envsync.cli import main
from envsync.errors import ManifestError
from envsync.lock.model import Artifact, Lock, LockedPackage, compute_fingerprint
from envsync.notebook.manifest import Manifest, parse_manifest
from tests.wheelhouse import LocalIndex

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schemas" / "envsync-manifest-v1.schema.json"
SHA = "ab" * 32


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def example_manifests() -> list[tuple[str, Any]]:
    """Every manifest shipped in examples/: notebooks' metadata.envsync and bare manifest JSON files."""
    folder = ROOT / "examples"
    files = [
        p
        for p in (sorted(folder.rglob("*")) if folder.is_dir() else [])
        if p.suffix in (".ipynb", ".json") and p.is_file() and "node_modules" not in p.parts
    ]
    found: list[tuple[str, Any]] = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            if path.suffix == ".ipynb":
                raise
            continue  # not JSON data (say, a JSON-with-comments config): not a manifest
        if path.suffix == ".ipynb":
            meta = data.get("metadata", {})
            if "envsync" in meta:
                found.append((str(path.relative_to(ROOT)), meta["envsync"]))
        elif isinstance(data, dict) and "version" in data and "project" in data and "dependencies" in data:
            found.append((str(path.relative_to(ROOT)), data))
    return found


def valid_manifest() -> dict[str, Any]:
    """A complete, self-consistent manifest with a lock, built through the models."""
    pkgs = (
        LockedPackage(
            name="alpha",
            version="1.0.0",
            index="https://pypi.org/simple",
            wheels=(Artifact("alpha-1.0.0-py3-none-any.whl", SHA),),
        ),
        LockedPackage(
            name="winonly",
            version="2.0",
            marker='sys_platform == "win32"',
            requires_python=">=3.8",
            index="https://pypi.org/simple",
            sdist=Artifact("winonly-2.0.tar.gz", "cd" * 32),
        ),
    )
    m = Manifest(project="sales-forecast", requires_python="==3.11.*", dependencies=("alpha>=1", "winonly"))
    lock = Lock(
        requires_python=m.requires_python,
        packages=pkgs,
        inputs=m.inputs,
        fingerprint=compute_fingerprint(pkgs),
        environments=m.environments,
    )
    return Manifest(
        project=m.project, requires_python=m.requires_python, dependencies=m.dependencies, lock=lock
    ).to_dict()


HAND_BUILT: dict[str, dict[str, Any]] = {
    "minimal": {"version": 1, "project": "x", "requires-python": ">=3.11", "dependencies": []},
    "with-index-and-targets": {
        "version": 1,
        "project": "a-b-c9",
        "requires-python": ">=3.11,<3.13",
        "dependencies": ["pandas>=2 ; python_version >= '3.11'"],
        "environments": ["linux-x86_64", "macos-arm64"],
        "index": "https://mirror.example.org/simple/",
    },
    "locked": valid_manifest(),
}


@pytest.fixture(scope="module")
def init_manifests(tmp_path_factory: pytest.TempPathFactory, local_index: LocalIndex) -> dict[str, Any]:
    """What `envsync init` writes, for several option combinations."""
    folder = tmp_path_factory.mktemp("init")
    variants = {
        "default": ["alpha"],
        "kernel-only": [],
        "two-targets": ["gamma", "--environment", "windows-x86_64", "--environment", "linux-x86_64"],
        "named-project": ["beta", "--project", "my-project-2"],
        "not-locked": ["alpha<2", "--no-lock"],
    }
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENVSYNC_HOME", str(folder / "home"))
        mp.setenv("ENVSYNC_ALLOWED_INDEXES", local_index.url)
        for name, args in variants.items():
            path = folder / f"{name}.ipynb"
            assert main(["init", str(path), *args, "--index", local_index.url, "--python", "3.11"]) == 0
            out[name] = json.loads(path.read_text(encoding="utf-8"))["metadata"]["envsync"]
    return out


@pytest.mark.parametrize(
    ("name", "manifest"), example_manifests(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_example_manifest_validates_against_the_schema(
    name: str, manifest: Any, validator: jsonschema.Draft202012Validator
) -> None:
    validator.validate(manifest)
    parse_manifest(manifest)


@pytest.mark.parametrize("variant", ["default", "kernel-only", "two-targets", "named-project", "not-locked"])
def test_manifest_written_by_init_validates_against_the_schema(
    variant: str, init_manifests: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    m = init_manifests[variant]
    validator.validate(m)
    assert parse_manifest(m).to_dict() == m
    assert ("lock" in m) is (variant != "not-locked")


@pytest.mark.parametrize("name", list(HAND_BUILT))
def test_hand_built_manifest_validates_and_parses(
    name: str, validator: jsonschema.Draft202012Validator
) -> None:
    validator.validate(HAND_BUILT[name])
    parse_manifest(HAND_BUILT[name])


def _edit(change: Callable[[dict[str, Any]], Any]) -> Any:
    data = valid_manifest()
    result = change(data)
    return data if result is None else result


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a value by a dotted path; numeric parts index lists."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


BROKEN: dict[str, Any] = {
    "not-an-object": ["alpha"],
    "a-string": "alpha",
    "version-0": _edit(_set("version", 0)),
    "version-as-string": _edit(_set("version", "1")),
    "version-true": _edit(_set("version", True)),
    "version-2": _edit(_set("version", 2)),
    "version-missing": _edit(_drop("version")),
    "project-missing": _edit(_drop("project")),
    "project-not-a-string": _edit(_set("project", 42)),
    "project-parent-dir": _edit(_set("project", "../x")),
    "project-with-slash": _edit(_set("project", "a/b")),
    "project-with-nul": _edit(_set("project", "ab\x00cd")),
    "project-500-chars": _edit(_set("project", "a" * 500)),
    "project-uppercase": _edit(_set("project", "Sales")),
    "project-empty": _edit(_set("project", "")),
    "dependencies-a-string": _edit(_set("dependencies", "alpha")),
    "dependency-not-a-string": _edit(_set("dependencies", [1])),
    "dependency-empty": _edit(_set("dependencies", [""])),
    "requires-python-a-number": _edit(_set("requires-python", 3.11)),
    "unknown-top-level-key": _edit(_set("colour", "blue")),
    "environment-unknown": _edit(_set("environments", ["linux-x86_64", "linux-riscv64"])),
    "environments-empty": _edit(_set("environments", [])),
    "environments-repeated": _edit(_set("environments", ["linux-x86_64", "linux-x86_64"])),
    "index-not-http": _edit(_set("index", "file:///etc/passwd")),
    "index-with-space": _edit(_set("index", "https://evil.example/simple --trusted-host x")),
    "sha256-too-short": _edit(_set("lock.packages.0.wheels.0.hashes.sha256", "ab" * 31)),
    "sha256-uppercase": _edit(_set("lock.packages.0.wheels.0.hashes.sha256", "AB" * 32)),
    "sha256-not-hex": _edit(_set("lock.packages.0.wheels.0.hashes.sha256", "zz" * 32)),
    "sha256-missing": _edit(_set("lock.packages.0.wheels.0.hashes", {"md5": "ab" * 16})),
    "artifact-name-with-path": _edit(
        _set("lock.packages.0.wheels.0.name", "../../evil-1.0-py3-none-any.whl")
    ),
    "package-name-with-space": _edit(_set("lock.packages.0.name", "alpha beta")),
    "lock-without-tool": _edit(_drop("lock.tool")),
    "lock-without-packages": _edit(_drop("lock.packages")),
    "lock-without-lock-version": _edit(_drop("lock.lock-version")),
    "lock-version-2": _edit(_set("lock.lock-version", "2.0")),
    "lock-without-fingerprint": _edit(_drop("lock.tool.envsync.fingerprint")),
    "fingerprint-not-sha256": _edit(_set("lock.tool.envsync.fingerprint", "md5:" + "ab" * 16)),
    "lock-a-list": _edit(_set("lock", [])),
}


def test_there_are_at_least_ten_broken_manifests() -> None:
    assert len(BROKEN) >= 10


def test_the_unbroken_base_manifest_passes_both_checks(validator: jsonschema.Draft202012Validator) -> None:
    # The control for the broken cases below: each differs from this by one edit.
    base = valid_manifest()
    validator.validate(base)
    assert parse_manifest(copy.deepcopy(base)).to_dict() == base


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_manifest_fails_the_schema_and_the_reader(
    name: str, validator: jsonschema.Draft202012Validator
) -> None:
    data = BROKEN[name]
    assert list(validator.iter_errors(data)), f"the schema accepts {name}"
    with pytest.raises(ManifestError) as info:
        parse_manifest(copy.deepcopy(data))
    assert info.value.message.startswith(("metadata.envsync", "manifest version 2 is newer"))


def test_newer_manifest_version_is_refused_by_name() -> None:
    with pytest.raises(
        ManifestError, match=r"^manifest version 2 is newer than this envsync understands \(up to 1\)$"
    ):
        parse_manifest(BROKEN["version-2"])


@pytest.mark.parametrize("project", ["abc\n", "sales-forecast\n"])
def test_project_slug_with_a_trailing_newline_is_refused(
    project: str, validator: jsonschema.Draft202012Validator
) -> None:
    data = _edit(_set("project", project))
    assert list(validator.iter_errors(data)), "the schema accepts a project name ending in a newline"
    with pytest.raises(ManifestError):
        parse_manifest(data)
