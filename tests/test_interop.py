"""import and export with other tools' files, on the local index: PEP 723 scripts, marimo and
juv notebooks, pyproject extras and groups, requirements includes and hashes, pylock, Binder."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from envsync.settings import Settings
from tests.support.cli import envsync
from tests.wheelhouse import LocalIndex

PEP723 = r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"


def manifest(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())["metadata"]["envsync"]
    return value


def locked(path: Path) -> dict[str, str]:
    return {p["name"]: p["version"] for p in manifest(path)["lock"]["packages"]}


def fingerprint(path: Path) -> str:
    value: str = manifest(path)["lock"]["tool"]["envsync"]["fingerprint"]
    return value


def script_block(deps: list[str], *, requires: str = ">=3.12", uv: str = "") -> str:
    lines = ["# /// script", f'# requires-python = "{requires}"', "# dependencies = ["]
    lines += [f'#     "{d}",' for d in deps]
    lines.append("# ]")
    if uv:
        lines += ["#", "# [tool.uv]", *(f"# {ln}" for ln in uv.splitlines())]
    return "\n".join([*lines, "# ///"]) + "\n"


def notebook(cells: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> str:
    return json.dumps({"cells": cells, "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


def code_cell(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
            "source": source.splitlines(keepends=True)}


def uv_lock(pins: dict[str, str], index: str, exclude_newer: str | None = None) -> str:
    """A uv.lock as juv stores it in metadata["uv.lock"]."""
    text = 'version = 1\nrequires-python = ">=3.11"\n'
    if exclude_newer:
        text += f'\n[options]\nexclude-newer = "{exclude_newer}"\n'
    for name, version in pins.items():
        text += f'\n[[package]]\nname = "{name}"\nversion = "{version}"\nsource = {{ registry = "{index}" }}\n'
    return text


# ---- PEP 723 scripts and marimo --------------------------------------------------------


def test_a_pep723_script_imports_its_dependencies_python_and_index(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "report.py"
    script.write_text(script_block(["beta"], uv=f'index-url = "{local_index.url}"') + "import beta\nprint(beta)\n")
    nb = tmp_path / "report.ipynb"
    r = envsync(capsys, "import", nb, script)
    assert r.code == 0, r.err
    m = manifest(nb)
    assert m["dependencies"] == ["beta"]
    assert m["requires-python"] == "==3.12.*"
    assert m["index"] == local_index.url
    assert locked(nb)["beta"] == "1.0.0"
    assert any("locking for 3.12" in n for n in r.notes)


def test_a_marimo_notebook_py_imports_as_marimo(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        script_block(["alpha<2"], requires=">=3.11")
        + '\nimport marimo\n\n__generated_with = "0.25.2"\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    import alpha\n    return (alpha,)\n'
    )
    r = envsync(capsys, "import", tmp_path / "app.ipynb", script, "--index", local_index.url, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["source-kind"] == "marimo"
    assert locked(tmp_path / "app.ipynb")["alpha"] == "1.1.0"


def test_a_marimo_exported_ipynb_imports_from_its_header(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "exported.ipynb"
    header = script_block(["beta"], requires=">=3.11") + "\n"
    nb.write_text(notebook([code_cell("import beta")], {"marimo": {"header": header, "marimo_version": "0.25.2"}}))
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url)
    assert r.code == 0, r.err
    assert manifest(nb)["dependencies"] == ["beta"]


def test_a_script_without_a_block_is_one_error_naming_it(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "plain.py"
    script.write_text("import marimo\n")
    r = envsync(capsys, "import", tmp_path / "x.ipynb", script)
    assert r.code == 1
    assert r.errors == [f"ERROR {script} has no `# /// script` block to import"]
    assert not (tmp_path / "x.ipynb").exists()


def test_a_script_naming_two_indexes_is_refused_on_purpose(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "two.py"
    uv = f'index-url = "{local_index.url}"\nextra-index-url = ["https://example.invalid/simple"]'
    script.write_text(script_block(["beta"], uv=uv))
    r = envsync(capsys, "import", tmp_path / "x.ipynb", script)
    assert r.code == 1
    assert len(r.errors) == 1 and "refused on purpose" in r.errors[0] and str(script) in r.errors[0]


# ---- juv ------------------------------------------------------------------------------


def juv_notebook(path: Path, index: LocalIndex, *, deps: list[str], pins: dict[str, str] | None) -> Path:
    meta: dict[str, Any] = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    if pins is not None:
        meta["uv.lock"] = uv_lock(pins, index.url)
    path.write_text(notebook([code_cell(script_block(deps, requires=">=3.11")), code_cell("import alpha")], meta))
    return path


def test_juv_import_keeps_the_versions_juv_locked_and_says_so(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = juv_notebook(tmp_path / "juv.ipynb", local_index, deps=["beta"], pins={"alpha": "1.0.0", "beta": "1.0.0"})
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url)
    assert r.code == 0, r.err
    # Fresh, alpha would be 2.0.0: juv's uv.lock holds it at 1.0.0.
    assert locked(nb)["alpha"] == "1.0.0"
    assert manifest(nb)["dependencies"] == ["beta"]
    assert any("keeping juv's locked versions of 2 packages" in n for n in r.notes)
    assert "note: kept 2 of 2 locked versions" in r.notes
    # The held versions were for the import only: an upgrade may move them.
    assert envsync(capsys, "lock", nb, "--upgrade").code == 0
    assert locked(nb)["alpha"] == "2.0.0"


def test_juv_versions_that_do_not_resolve_are_dropped_with_a_note(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = juv_notebook(tmp_path / "juv.ipynb", local_index, deps=["beta"], pins={"alpha": "0.9.0"})
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url)
    assert r.code == 0, r.err
    assert any("do not resolve for every target" in n and "resolved afresh" in n for n in r.notes)
    assert locked(nb)["alpha"] == "2.0.0"


def test_an_unlocked_juv_notebook_is_resolved_afresh_with_a_note(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = juv_notebook(tmp_path / "juv.ipynb", local_index, deps=["beta"], pins=None)
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url)
    assert r.code == 0, r.err
    assert any("juv has not locked this notebook" in n for n in r.notes)


def test_lock_check_warns_when_the_juv_header_and_the_manifest_differ(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = juv_notebook(tmp_path / "juv.ipynb", local_index, deps=["beta"], pins=None)
    assert envsync(capsys, "import", nb, nb, "--index", local_index.url).code == 0
    r = envsync(capsys, "lock", nb, "--check")
    assert r.code == 0 and "WARNING" not in r.err
    # juv edits its own header (as `juv add` does): the manifest does not follow by itself.
    data = json.loads(nb.read_text())
    data["cells"][0]["source"] = script_block(["beta", "gamma"], requires=">=3.11").splitlines(keepends=True)
    nb.write_text(json.dumps(data, indent=1))
    r = envsync(capsys, "lock", nb, "--check")
    assert r.code == 0
    assert "WARNING the juv `# /// script` header declares other dependencies than the manifest (only in the header: gamma)" in r.err
    r = envsync(capsys, "lock", nb, "--check", "--json")
    assert json.loads(r.out)["warnings"] == [
        "the juv `# /// script` header declares other dependencies than the manifest (only in the header: gamma)"
    ]


def test_launch_on_a_juv_notebook_without_a_manifest_says_how_to_import(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = juv_notebook(tmp_path / "juv.ipynb", local_index, deps=["beta"], pins=None)
    r = envsync(capsys, "launch", nb)
    assert r.code == 1
    assert r.errors == [f"ERROR {nb} has juv's `# /// script` metadata but no envsync manifest"]
    assert f"hint: import it: `envsync import {nb} {nb}`" in r.err


# ---- export pep723 ----------------------------------------------------------------------


def test_export_pep723_writes_the_block_and_names_what_it_cannot_carry(
    nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = envsync(capsys, "export", nb_locked, "--format", "pep723")
    assert r.code == 0, r.err
    m = re.search(PEP723, r.out)
    assert m is not None and m.group("type") == "script"
    meta = tomllib.loads("".join(ln[2:] if ln.startswith("# ") else ln[1:] for ln in m.group("content").splitlines(keepends=True)))
    assert meta["dependencies"] == ["alpha"] and meta["requires-python"] == "==3.11.*"
    assert meta["tool"]["uv"]["index-url"] == manifest(nb_locked)["index"]
    assert "WARNING the `# /// script` block carries declared dependencies and requires-python only: the lock's 3 pinned versions" in r.err

    script = tmp_path / "run.py"
    script.write_text(script_block(["old"]) + "\nimport alpha\n")
    assert envsync(capsys, "export", nb_locked, "--format", "pep723", "-o", script).code == 0
    text = script.read_text()
    assert text.endswith("\nimport alpha\n") and '"old"' not in text and len(re.findall(PEP723, text)) == 1
    r = envsync(capsys, "import", tmp_path / "back.ipynb", script, "--python", "3.11")
    assert r.code == 0, r.err
    assert manifest(tmp_path / "back.ipynb")["dependencies"] == ["alpha"]
    assert fingerprint(tmp_path / "back.ipynb") == fingerprint(nb_locked)


@pytest.fixture
def nb_locked(tmp_path: Path, locked_template: Path, settings: Settings) -> Path:
    path = tmp_path / "analysis.ipynb"
    shutil.copyfile(locked_template, path)
    return path


# ---- pyproject ----------------------------------------------------------------------------

PYPROJECT = """\
[project]
name = "Sales_Forecast.Tools"
requires-python = ">=3.11"
dependencies = ["alpha<2"]

[project.optional-dependencies]
plot = ["beta"]
windows = ["winonly"]

[dependency-groups]
lint = ["comm"]
dev = ["gamma"]
test = [{include-group = "dev"}]

[tool.black]
line-length = 100
"""


def test_pyproject_takes_the_extras_and_groups_asked_for_and_notes_the_rest(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "pyproject.toml"
    src.write_text(PYPROJECT)
    nb = tmp_path / "nb.ipynb"
    r = envsync(capsys, "import", nb, src, "--index", local_index.url, "--extra", "plot", "--group", "test", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["project"] == "sales-forecast-tools"
    assert manifest(nb)["dependencies"] == ["alpha<2", "beta", "gamma"]
    assert f"{src}: optional dependencies windows not taken (add --extra NAME or --all-extras)" in doc["notes"]
    assert f"{src}: dependency group(s) lint not taken (add --group NAME)" in doc["notes"]

    r = envsync(capsys, "import", tmp_path / "all.ipynb", src, "--index", local_index.url, "--all-extras")
    assert r.code == 0, r.err
    assert manifest(tmp_path / "all.ipynb")["dependencies"] == ["alpha<2", "beta", "winonly"]
    assert f"note: {src}: dependency group(s) dev, lint, test not taken (add --group NAME)" in r.notes


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--extra", "nope"], "has no optional-dependencies entry 'nope'"),
        (["--group", "nope"], "has no dependency group 'nope'"),
    ],
)
def test_pyproject_unknown_extra_or_group_is_a_usage_error(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    src = tmp_path / "pyproject.toml"
    src.write_text(PYPROJECT)
    r = envsync(capsys, "import", tmp_path / "nb.ipynb", src, *argv)
    assert r.code == 2
    assert len(r.errors) == 1 and message in r.errors[0]
    assert not (tmp_path / "nb.ipynb").exists()


def test_extra_on_a_requirements_file_is_a_usage_error(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "requirements.txt"
    src.write_text("alpha\n")
    r = envsync(capsys, "import", tmp_path / "nb.ipynb", src, "--extra", "x")
    assert r.code == 2
    assert r.errors == ["ERROR --extra, --group and --all-extras apply to a pyproject.toml only"]


# ---- requirements ----------------------------------------------------------------------


def test_requirements_follow_includes_constraints_and_continuations(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    main_file = tmp_path / "requirements.txt"
    main_file.write_text(
        f"# top\n--index-url {local_index.url}\n-r sub/base.txt\n-c constraints.txt\ngamma \\\n  >=0.5  # trailing\n"
    )
    (tmp_path / "sub" / "base.txt").write_text("beta\n-r ../requirements.txt\n")
    (tmp_path / "constraints.txt").write_text("alpha==1.0.0\n")
    nb = tmp_path / "nb.ipynb"
    r = envsync(capsys, "import", nb, main_file)
    assert r.code == 0, r.err
    assert manifest(nb)["dependencies"] == ["beta", "gamma>=0.5"]
    assert manifest(nb)["index"] == local_index.url
    assert locked(nb)["alpha"] == "1.0.0"
    assert f"note: {tmp_path / 'sub' / '..' / 'requirements.txt'}: included again: read once" in r.notes


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("git+https://example.invalid/repo.git#egg=repo", "is a URL, VCS link or path: refused on purpose: envsync locks packages from an index"),
        ("repo @ https://example.invalid/repo-1.0.tar.gz", "is a URL, VCS link or path: refused on purpose: envsync locks packages from an index"),
        ("./local/package", "is a URL, VCS link or path: refused on purpose: envsync locks packages from an index"),
        ("dist/pkg-1.0-py3-none-any.whl", "is a URL, VCS link or path: refused on purpose: envsync locks packages from an index"),
        ("-e .", "an editable install is refused on purpose: envsync locks packages from an index"),
        ("--extra-index-url https://example.invalid/simple", "--extra-index-url is refused on purpose: envsync locks every package from one index"),
        ("--find-links ./wheels", "--find-links is refused on purpose: envsync locks every package from one index"),
        ("alpha==1.0 --hash=md5:abc", "only sha256 hashes are kept"),
        ("not a requirement!", "invalid requirement 'not a requirement!'"),
        ("-r missing.txt", "-r 'missing.txt': no such file"),
    ],
)
def test_requirements_refusals_name_the_file_and_line(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str], line: str, why: str
) -> None:
    src = tmp_path / "requirements.txt"
    src.write_text(f"alpha\n{line}\n")
    nb = tmp_path / "nb.ipynb"
    r = envsync(capsys, "import", nb, src)
    assert r.code == 1
    assert len(r.errors) == 1
    assert r.errors[0].startswith(f"ERROR {src}:2: ") and why in r.errors[0]
    assert not nb.exists()


def test_hashed_requirements_round_trip_keeps_the_fingerprint_for_one_target(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    one = ("--environment", "linux-x86_64", "--python", "3.11")
    nb = tmp_path / "one.ipynb"
    assert envsync(capsys, "init", nb, "beta", "--index", local_index.url, *one).code == 0
    req = tmp_path / "requirements.txt"
    assert envsync(capsys, "export", nb, "--format", "requirements", "--environment", "linux-x86_64", "-o", req).code == 0
    back = tmp_path / "back.ipynb"
    r = envsync(capsys, "import", back, req, *one)
    assert r.code == 0, r.err
    assert fingerprint(back) == fingerprint(nb)


def test_a_hash_the_index_does_not_serve_is_an_error_naming_the_package(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(f"--index-url {local_index.url}\nalpha==1.1.0 \\\n    --hash=sha256:{'0' * 64}\n")
    nb = tmp_path / "nb.ipynb"
    r = envsync(capsys, "import", nb, req)
    assert r.code == 1
    assert r.errors == [f"ERROR alpha: the lock's files (1.1.0) match none of the --hash values at {req}:2"]
    assert not nb.exists()


# ---- --python ranges ---------------------------------------------------------------------


def test_python_range_covers_every_minor_in_it_and_show_says_which(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "range.ipynb"
    r = envsync(capsys, "init", nb, "alpha", "--index", local_index.url, "--python", ">=3.11,<3.14")
    assert r.code == 0, r.err
    assert manifest(nb)["requires-python"] == "<3.14,>=3.11"
    r = envsync(capsys, "show", nb)
    assert "covered pythons: 3.11, 3.12, 3.13" in r.out
    assert json.loads(envsync(capsys, "show", nb, "--json").out)["pythons"] == ["3.11", "3.12", "3.13"]


def test_a_bare_minor_still_means_that_minor(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "one.ipynb"
    assert envsync(capsys, "init", nb, "alpha", "--index", local_index.url, "--python", "3.12").code == 0
    assert manifest(nb)["requires-python"] == "==3.12.*"
    assert json.loads(envsync(capsys, "show", nb, "--json").out)["pythons"] == ["3.12"]


def test_a_python_range_with_no_known_cpython_is_refused(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "none.ipynb"
    r = envsync(capsys, "init", nb, "alpha", "--index", local_index.url, "--python", ">=3.99")
    assert r.code == 1
    assert len(r.errors) == 1 and "admits no CPython" in r.errors[0]
    assert not nb.exists()


# ---- pylock ------------------------------------------------------------------------------


def test_pylock_round_trip_keeps_declared_dependencies_and_the_fingerprint(
    nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pylock.toml"
    assert envsync(capsys, "export", nb_locked, "-o", out).code == 0
    back = tmp_path / "back.ipynb"
    r = envsync(capsys, "import", back, out)
    assert r.code == 0, r.err
    assert manifest(back)["dependencies"] == manifest(nb_locked)["dependencies"] == ["alpha"]
    assert manifest(back)["requires-python"] == manifest(nb_locked)["requires-python"]
    assert fingerprint(back) == fingerprint(nb_locked)


def test_pylock_with_dependency_info_declares_the_top_level_and_upgrade_can_move_the_rest(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "pylock.toml"
    src.write_text(
        'lock-version = "1.0"\ncreated-by = "someone"\nrequires-python = ">=3.11"\n'
        f'[[packages]]\nname = "alpha"\nversion = "1.0.0"\nindex = "{local_index.url}"\n'
        f'[[packages]]\nname = "beta"\nversion = "1.0.0"\nindex = "{local_index.url}"\ndependencies = [{{name = "alpha"}}]\n'
    )
    nb = tmp_path / "nb.ipynb"
    r = envsync(capsys, "import", nb, src)
    assert r.code == 0, r.err
    assert manifest(nb)["dependencies"] == ["beta"]
    assert locked(nb)["alpha"] == "1.0.0"
    assert envsync(capsys, "lock", nb, "--upgrade").code == 0
    assert locked(nb)["alpha"] == "2.0.0"


# ---- Binder --------------------------------------------------------------------------------


def test_export_binder_writes_hashed_requirements_and_runtime_txt(
    nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "binder"
    r = envsync(capsys, "export", nb_locked, "--format", "binder", "-o", folder)
    assert r.code == 0, r.err
    assert (folder / "runtime.txt").read_text() == "python-3.11\n"
    req = (folder / "requirements.txt").read_text()
    assert "# for linux-x86_64, CPython 3.11" in req
    assert re.search(r"^alpha==2\.0\.0 \\\n    --hash=sha256:[0-9a-f]{64}$", req, re.M)
    assert "WARNING Binder files cover linux-x86_64 with Python 3.11 only" in r.err


def test_export_binder_needs_a_folder(nb_locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = envsync(capsys, "export", nb_locked, "--format", "binder")
    assert r.code == 2
    assert r.errors == ["ERROR --format binder writes two files: name their folder with -o DIR"]


# ---- the juv header cell kept in step ------------------------------------------------------


def jupyter_juv_notebook(path: Path, deps: list[str]) -> Path:
    """A juv notebook as Jupyter saves it (indent 1, sorted keys), its header first."""
    header = script_block(deps, requires=">=3.11", uv='prerelease = "allow"')
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": "h1", "metadata": {"jupyter": {"source_hidden": True}},
             "outputs": [], "source": header.rstrip("\n").splitlines(keepends=True)},
            {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": ["# Ünïcödé ✓\n", "text"]},
            {"cell_type": "code", "execution_count": 3, "id": "c2", "metadata": {}, "outputs": [], "source": ["import alpha"]},
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def header_deps(path: Path) -> list[str]:
    cell = json.loads(path.read_text())["cells"][0]
    m = re.search(PEP723, "".join(cell["source"]) + "\n")
    assert m is not None
    meta = tomllib.loads("".join(ln[2:] if ln.startswith("# ") else ln[1:] for ln in m.group("content").splitlines(keepends=True)))
    assert meta["tool"]["uv"]["prerelease"] == "allow"  # the rest of the block is kept
    deps: list[str] = meta["dependencies"]
    return deps


def changed_lines_outside_the_header(before: str, after: str) -> list[str]:
    """Lines that differ between two texts, leaving out metadata.envsync and the header cell's source."""
    import difflib

    from envsync.notebook.file import splice_manifest

    a = before.splitlines()
    b = splice_manifest(after, None).splitlines()
    start = a.index('   "source": [')
    end = next(i for i in range(start, len(a)) if a[i].startswith("   ]"))
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal" and not (start <= i1 and i2 <= end + 1):
            out += a[i1:i2] + b[j1:j2]
    return out


def test_add_and_remove_keep_the_juv_header_in_step_and_leave_every_other_byte(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = jupyter_juv_notebook(tmp_path / "juv.ipynb", ["beta"])
    original = nb.read_text(encoding="utf-8")
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url)
    assert r.code == 0, r.err
    assert "note: the juv `# /// script` cell stays; `envsync add`/`remove` will keep it in step (--drop-juv-header removes it)" in r.notes
    r = envsync(capsys, "add", nb, "gamma>=0.5")
    assert r.code == 0, r.err
    assert "note: the juv `# /// script` cell (cell 1) now declares: beta, gamma>=0.5" in r.notes
    assert header_deps(nb) == ["beta", "gamma>=0.5"]
    assert changed_lines_outside_the_header(original, nb.read_text(encoding="utf-8")) == []
    assert envsync(capsys, "lock", nb, "--check").err.count("WARNING") == 0
    r = envsync(capsys, "remove", nb, "beta")
    assert r.code == 0, r.err
    assert header_deps(nb) == ["gamma>=0.5"]
    assert manifest(nb)["dependencies"] == ["gamma>=0.5"]


def test_drop_juv_header_removes_the_cell_and_nothing_else(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = jupyter_juv_notebook(tmp_path / "juv.ipynb", ["beta"])
    before = json.loads(nb.read_text())
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url, "--drop-juv-header")
    assert r.code == 0, r.err
    assert "note: removed the juv `# /// script` cell (cell 1)" in r.notes
    after = json.loads(nb.read_text())
    assert after["cells"] == before["cells"][1:]
    assert manifest(nb)["dependencies"] == ["beta"]
    # Without the header there is nothing to keep in step.
    assert envsync(capsys, "add", nb, "gamma").notes == []


def test_keep_juv_header_with_a_python_range_writes_it_into_the_header(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = jupyter_juv_notebook(tmp_path / "juv.ipynb", ["Beta >= 1.0"])
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url, "--keep-juv-header", "--python", ">=3.11,<3.13")
    assert r.code == 0, r.err
    assert header_deps(nb) == ["Beta>=1.0"]
    source = "".join(json.loads(nb.read_text())["cells"][0]["source"])
    assert '# requires-python = "<3.13,>=3.11"' in source
    assert manifest(nb)["requires-python"] == "<3.13,>=3.11"


def test_juv_header_options_need_a_juv_notebook_imported_into_itself(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "requirements.txt"
    src.write_text("alpha\n")
    r = envsync(capsys, "import", tmp_path / "nb.ipynb", src, "--drop-juv-header")
    assert r.code == 2
    assert r.errors == ["ERROR --keep-juv-header and --drop-juv-header apply to a juv notebook imported into itself"]


# ---- what another tool's file may not smuggle in ----------------------------------------


@pytest.mark.parametrize(
    ("lock_text", "message"),
    [
        ('[[package]]\nname = "alpha"\nversion = "1.0\\n--index-url http://127.0.0.1:9/simple"\nsource = { registry = "x" }\n',
         "a locked package has no valid name and version"),
        ('[options]\nexclude-newer = "--help"\n', "exclude-newer '--help' is not a date or RFC 3339 timestamp"),
        ('[[package]]\nname = "alpha"\nversion = "1.0"\nsource = { registry = "x" }\n[[package]]\nname = "alpha"\n'
         'version = "2.0"\nsource = { registry = "x" }\nresolution-markers = ["os_name == \'nt\' or"]\n'
         '[[package]]\nname = "alpha"\nversion = "3.0"\nsource = { registry = "x" }\nresolution-markers = ["os_name == \'nt\'"]\n',
         "locked at several versions without markers"),
    ],
)
def test_a_juv_lock_cannot_put_options_or_bad_values_into_the_resolution(
    tmp_path: Path, local_index: LocalIndex, settings: Settings, capsys: pytest.CaptureFixture[str], lock_text: str, message: str
) -> None:
    nb = tmp_path / "juv.ipynb"
    nb.write_text(notebook([code_cell(script_block(["beta"], requires=">=3.11"))], {"uv.lock": lock_text}))
    r = envsync(capsys, "import", nb, nb, "--index", local_index.url)
    if "without markers" in message:
        assert r.code == 0, r.err
        assert any(message in n for n in r.notes)
        return
    assert r.code == 1
    assert len(r.errors) == 1 and message in r.errors[0] and "metadata.uv.lock" in r.errors[0]
    assert "envsync" not in json.loads(nb.read_text())["metadata"]


def test_export_pep723_into_a_notebook_fills_its_juv_cell_or_adds_one_first(
    nb_locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.ipynb"
    plain.write_text(json.dumps(json.loads(notebook([code_cell("import alpha")])), indent=1, sort_keys=True) + "\n")
    r = envsync(capsys, "export", nb_locked, "--format", "pep723", "-o", plain)
    assert r.code == 0, r.err
    assert f"note: wrote the `# /// script` block as the first cell of {plain}" in r.notes
    cells = json.loads(plain.read_text())["cells"]
    assert len(cells) == 2 and cells[1]["source"] == ["import alpha"]
    assert cells[0]["cell_type"] == "code" and '#     "alpha",\n' in cells[0]["source"]

    juv_nb = tmp_path / "juv.ipynb"
    juv_nb.write_text(notebook([code_cell("x = 1\n" + script_block(["old"]) + "y = 2\n"), code_cell("import alpha")]))
    r = envsync(capsys, "export", nb_locked, "--format", "pep723", "-o", juv_nb)
    assert r.code == 0, r.err
    assert f"note: wrote the `# /// script` block into cell 1 of {juv_nb}" in r.notes
    source = "".join(json.loads(juv_nb.read_text())["cells"][0]["source"])
    assert source.startswith("x = 1\n# /// script\n") and source.endswith("# ///\ny = 2\n") and '"old"' not in source
    # What juv reads back is what the manifest declares.
    r = envsync(capsys, "import", juv_nb, juv_nb, "--python", "3.11")
    assert r.code == 0, r.err
    assert fingerprint(juv_nb) == fingerprint(nb_locked)
