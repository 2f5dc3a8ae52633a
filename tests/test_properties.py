"""Properties, checked with hypothesis: the manifest splice and the lock diff.

(1) Splicing metadata.envsync into any notebook text (Jupyter's format, compact, 2- and
    4-space indents) changes that key only, and removing it gives the original bytes back.
(2) diff(A, A) is empty.  (3) diff(A, B).inverse() == diff(B, A).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from envsync.lock.diff import diff
from envsync.lock.model import Artifact, Lock, LockedPackage, compute_fingerprint
from envsync.notebook import file as notebook

PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- notebooks -------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
keys = st.one_of(
    text,
    # Keys around "envsync" in sort order, so insertion lands before, between and after them.
    st.sampled_from(
        ["envsync-old", "envsyn", "envsynd", "kernelspec", "language_info", "a", "zzz", "Envsync", "énv"]
    ),
).filter(lambda k: k != notebook.KEY)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)),
    max_leaves=12,
)


@st.composite
def cells(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["code", "markdown", "raw"]))
    cell: dict[str, Any] = {
        "cell_type": kind,
        "id": draw(st.text("abcdef0123456789-", min_size=1, max_size=12)),
        "metadata": draw(st.dictionaries(keys, json_values, max_size=3)),
        "source": draw(st.one_of(text, st.lists(text, max_size=4))),
    }
    if kind == "code":
        cell["execution_count"] = draw(st.one_of(st.none(), st.integers(0, 999)))
        cell["outputs"] = draw(st.lists(st.dictionaries(text, json_values, max_size=3), max_size=2))
    return cell


@st.composite
def notebooks(draw: st.DrawFn) -> dict[str, Any]:
    nb: dict[str, Any] = {
        "cells": draw(st.lists(cells(), max_size=3)),
        "metadata": draw(st.dictionaries(keys, json_values, max_size=5)),
        "nbformat": 4,
        "nbformat_minor": draw(st.integers(0, 5)),
    }
    nb.update(
        draw(st.dictionaries(st.sampled_from(["x-extra", "zz_unknown", "aaa"]), json_values, max_size=2))
    )
    return nb


def jupyter(nb: Any) -> str:
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


FORMATS = {
    "jupyter": jupyter,
    "compact": lambda nb: json.dumps(nb, separators=(",", ":"), ensure_ascii=False),
    "indent2": lambda nb: json.dumps(nb, indent=2, ensure_ascii=False) + "\n",
    "indent4-ascii": lambda nb: json.dumps(nb, indent=4, sort_keys=True),
}

# None means "remove" to splice_manifest, so a manifest value is anything else.
manifests = st.one_of(
    st.dictionaries(
        st.sampled_from(["version", "project", "dependencies", "lock", "ünï"]), json_values, max_size=5
    ),
    json_values.filter(lambda v: v is not None),
)


def without_manifest(data: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in data["metadata"].items() if k != notebook.KEY}
    return {**data, "metadata": meta}


@pytest.mark.parametrize("fmt", list(FORMATS))
@PROFILE
@given(nb=notebooks(), value=manifests)
def test_splice_changes_only_the_manifest_and_removing_it_restores_the_bytes(
    fmt: str, nb: dict[str, Any], value: Any
) -> None:
    raw = FORMATS[fmt](nb)
    spliced = notebook.splice_manifest(raw, value)
    data = json.loads(spliced)
    assert data["metadata"][notebook.KEY] == value
    assert without_manifest(data) == nb
    # A second write replaces the value in place.
    again = notebook.splice_manifest(spliced, {"version": 1})
    assert json.loads(again)["metadata"][notebook.KEY] == {"version": 1}
    assert without_manifest(json.loads(again)) == nb
    assert notebook.splice_manifest(spliced, None) == raw
    assert notebook.splice_manifest(again, None) == raw


@PROFILE
@given(nb=notebooks(), value=manifests)
def test_splice_into_a_jupyter_saved_notebook_is_what_jupyter_would_save(
    nb: dict[str, Any], value: Any
) -> None:
    spliced = notebook.splice_manifest(jupyter(nb), value)
    expected = {**nb, "metadata": {**nb["metadata"], notebook.KEY: value}}
    assert spliced == jupyter(expected)


@settings(max_examples=40, deadline=None)
@given(nb=notebooks(), value=manifests, fmt=st.sampled_from(list(FORMATS)))
def test_write_manifest_round_trips_a_real_file(nb: dict[str, Any], value: Any, fmt: str) -> None:
    raw = FORMATS[fmt](nb).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nb.ipynb"
        path.write_bytes(raw)
        written = notebook.write_manifest(notebook.read_notebook(path), value)
        reread = notebook.read_notebook(path)
        assert reread.raw == written.raw
        assert reread.manifest_data == value
        notebook.write_manifest(reread, None)
        assert path.read_bytes() == raw
        assert [p.name for p in Path(tmp).iterdir()] == ["nb.ipynb"]


# ---- locks -----------------------------------------------------------------------------

NAMES = ["alpha", "beta", "gamma-x", "numpy", "zope-interface"]
VERSIONS = ["0.9", "1.0", "1.0.1", "1.9", "1.10", "2.0.0rc1", "2.0.0", "10.0"]
MARKERS = [None, "sys_platform == 'win32'", "sys_platform != 'win32'", "python_version >= '3.12'"]
shas = st.sampled_from(["11" * 32, "22" * 32, "33" * 32])


@st.composite
def artifacts_for(draw: st.DrawFn, name: str, version: str) -> tuple[Artifact, ...]:
    tags = draw(
        st.lists(
            st.sampled_from(["py3-none-any", "cp311-cp311-win_amd64", "cp311-cp311-manylinux_2_17_x86_64"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    return tuple(Artifact(f"{name.replace('-', '_')}-{version}-{t}.whl", draw(shas)) for t in tags)


@st.composite
def locks(draw: st.DrawFn, *, forks: bool) -> Lock:
    """A lock: per name one package, or (with forks) several under distinct markers."""
    packages = []
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES))):
        markers = (
            draw(st.lists(st.sampled_from(MARKERS), min_size=1, max_size=2, unique=True))
            if forks
            else [draw(st.sampled_from(MARKERS))]
        )
        versions = draw(
            st.lists(st.sampled_from(VERSIONS), min_size=len(markers), max_size=len(markers), unique=True)
        )
        for marker, version in zip(markers, versions, strict=True):
            packages.append(
                LockedPackage(name, version, marker=marker, wheels=draw(artifacts_for(name, version)))
            )
    return Lock(
        requires_python=draw(st.sampled_from(["==3.11.*", ">=3.11", ">=3.10,<3.13"])),
        packages=tuple(packages),
        inputs="sha256:" + "0" * 64,
        fingerprint=compute_fingerprint(packages),
        environments=tuple(
            draw(
                st.lists(
                    st.sampled_from(["linux-x86_64", "macos-arm64", "windows-x86_64"]),
                    min_size=1,
                    unique=True,
                )
            )
        ),
    )


@PROFILE
@given(a=locks(forks=True))
def test_diff_of_a_lock_with_itself_is_empty(a: Lock) -> None:
    d = diff(a, a)
    assert d.empty
    assert d.changes == ()
    assert d.to_dict()["empty"] is True


@PROFILE
@given(a=locks(forks=False), b=locks(forks=False))
def test_inverse_of_a_diff_is_the_diff_the_other_way(a: Lock, b: Lock) -> None:
    assert diff(a, b).inverse() == diff(b, a)


@PROFILE
@given(a=locks(forks=False), b=locks(forks=False))
def test_diff_against_no_lock_adds_or_removes_every_package(a: Lock, b: Lock) -> None:
    added = diff(None, a)
    assert [c.kind for c in added.changes] == ["added"] * len(a.by_name())
    assert added.inverse() == diff(a, None)


def _fork(version_win: str, version_other: str) -> Lock:
    pkgs = tuple(
        LockedPackage("numpy", v, marker=m, wheels=(Artifact(f"numpy-{v}-py3-none-any.whl", "11" * 32),))
        for v, m in ((version_win, "sys_platform == 'win32'"), (version_other, "sys_platform != 'win32'"))
    )
    return Lock(
        "==3.11.*", pkgs, "sha256:" + "0" * 64, compute_fingerprint(pkgs), ("linux-x86_64", "windows-x86_64")
    )


def test_marker_fork_where_only_the_older_branch_moves_is_reported_as_upgraded() -> None:
    # numpy 1.9 on Windows and 2.0.0 elsewhere, then 1.10 on Windows: one branch upgraded.
    old, new = _fork("1.9", "2.0.0"), _fork("1.10", "2.0.0")
    forward, backward = diff(old, new), diff(new, old)
    assert [(c.kind, c.old, c.new) for c in forward.changes] == [("upgraded", "1.9, 2.0.0", "1.10, 2.0.0")]
    assert forward.inverse() == backward


@PROFILE
@example(a=_fork("1.9", "2.0.0"), b=_fork("1.10", "2.0.0"))
@given(a=locks(forks=True), b=locks(forks=True))
def test_inverse_of_a_diff_is_the_diff_the_other_way_with_marker_forks(a: Lock, b: Lock) -> None:
    assert diff(a, b).inverse() == diff(b, a)


@given(st.text(alphabet='ab/.,=\n"\r\x00 é', max_size=60))
def test_record_rows_split_by_hand_are_the_csv_modules_rows(text: str) -> None:
    import csv
    import io

    from envsync.env.wheel_record import _rows

    def kept(rows: Iterable[list[str]]) -> list[list[str]]:  # read_record skips rows of under two fields
        return [r for r in rows if len(r) >= 2]

    try:
        expected = kept(csv.reader(io.StringIO(text)))
    except csv.Error:
        expected = None
    try:
        got = kept(_rows(text))
    except csv.Error:
        got = None
    assert got == expected
