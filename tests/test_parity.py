"""File-level parity: an edited, deleted or shared installed file is drift, and repair fixes it."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from envsync import proc
from envsync.cli import main
from envsync.env import drift, files, store, wheel_record
from envsync.env.drift import check_lock
from envsync.errors import InstallError
from envsync.ops.sync import ProgressEvent, SyncResult, sync
from envsync.settings import Settings
from tests.envhelpers import make_lock, settings_at
from tests.wheelhouse import LocalIndex, _record_hash


def _site(env: Path) -> Path:
    return drift.site_packages(env)[0]


def _module(result: SyncResult, name: str = "alpha") -> Path:
    return _site(result.env) / name / "__init__.py"


def _notebook(tmp_path: Path, template: Path) -> Path:
    nb = tmp_path / "analysis.ipynb"
    shutil.copy(template, nb)
    return nb


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _synced_notebook(
    tmp_path: Path, settings: Settings, locked_template: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path]:
    nb = _notebook(tmp_path, locked_template)
    code, out, _err = _cli(capsys, "sync", str(nb), "--json")
    assert code == 0
    env = Path(json.loads(out)["env"])
    return nb, _site(env) / "alpha" / "__init__.py"


def test_an_appended_line_is_drift_named_in_check_and_sync_repair_restores_the_file(
    tmp_path: Path, settings: Settings, locked_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nb, module = _synced_notebook(tmp_path, settings, locked_template, capsys)
    original = module.read_bytes()
    with module.open("a") as fh:
        fh.write("import os; os.system('echo owned')\n")

    code, _out, err = _cli(capsys, "check", str(nb))
    assert code == 3
    assert "alpha" in err and "alpha/__init__.py (modified)" in err

    code, out, _err = _cli(capsys, "check", str(nb), "--json")
    report = json.loads(out)
    assert code == 3 and not report["clean"]
    [diff] = report["differences"]
    assert diff["name"] == "alpha" and diff["kind"] == "modified"
    assert diff["locked"] == diff["installed"]
    assert diff["files"] == [{"path": str(module.relative_to(report["env"])), "problem": "modified"}]

    code, out, _err = _cli(capsys, "sync", str(nb), "--repair", "--json")
    assert code == 0 and json.loads(out)["repaired"] == ["alpha"]
    assert module.read_bytes() == original
    assert _cli(capsys, "check", str(nb))[0] == 0
    assert _cli(capsys, "check", str(nb), "--deep")[0] == 0


def test_a_deleted_module_is_missing_and_repaired(
    tmp_path: Path, settings: Settings, locked_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nb, module = _synced_notebook(tmp_path, settings, locked_template, capsys)
    original = module.read_bytes()
    module.unlink()

    code, out, _err = _cli(capsys, "check", str(nb), "--json")
    assert code == 3
    [diff] = json.loads(out)["differences"]
    assert diff["kind"] == "modified" and diff["files"][0]["problem"] == "missing"

    assert _cli(capsys, "sync", str(nb), "--repair")[0] == 0
    assert module.read_bytes() == original
    assert _cli(capsys, "check", str(nb))[0] == 0


def test_deep_check_finds_an_edit_that_kept_size_and_mtime(
    tmp_path: Path, settings: Settings, locked_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nb, module = _synced_notebook(tmp_path, settings, locked_template, capsys)
    st = module.stat()
    data = module.read_bytes()
    module.write_bytes(data.replace(b"__version__", b"__VERSION__"))
    assert module.read_bytes() != data
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert _cli(capsys, "check", str(nb))[0] == 0  # what the fast check cannot see
    code, out, _err = _cli(capsys, "check", str(nb), "--deep", "--json")
    report = json.loads(out)
    assert code == 3 and report["deep"] is True
    assert report["differences"][0]["files"][0]["problem"] == "modified"


def test_two_envs_from_one_cache_share_no_file(tmp_path: Path, local_index: LocalIndex) -> None:
    lock = make_lock(local_index)
    home_a, home_b = (
        settings_at(tmp_path / "a", local_index.url),
        settings_at(tmp_path / "b", local_index.url),
    )
    a = sync(lock=lock, project="demo", notebook=Path("a.ipynb"), settings=home_a)
    b = sync(lock=lock, project="demo", notebook=Path("b.ipynb"), settings=home_b)
    file_a, file_b = _module(a), _module(b)
    original = file_b.read_bytes()
    cached = _cached_copies(file_a.read_bytes())
    assert os.stat(file_a).st_ino != os.stat(file_b).st_ino
    assert all(os.stat(c).st_ino not in (os.stat(file_a).st_ino, os.stat(file_b).st_ino) for c in cached)

    with file_a.open("a") as fh:
        fh.write("TAMPERED = True\n")

    assert file_b.read_bytes() == original
    assert all(c.read_bytes() == original for c in cached)
    report = check_lock(lock=lock, settings=home_a)
    assert [(d.name, d.kind) for d in report.differences] == [("alpha", "modified")]
    assert [f.path for f in report.differences[0].files] == [str(file_a.relative_to(a.env))]
    assert check_lock(lock=lock, settings=home_b).clean

    fixed = sync(lock=lock, project="demo", notebook=Path("a.ipynb"), settings=home_a, repair=True)
    assert fixed.repaired == ("alpha",) and fixed.drift.clean
    assert file_a.read_bytes() == original
    assert check_lock(lock=lock, settings=home_b).clean


def _cached_copies(content: bytes, cache: Path | None = None) -> list[Path]:
    root = cache or Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")
    return [p for p in (root / "archive-v0").glob("*/alpha/__init__.py") if p.read_bytes() == content]


def test_a_corrupted_cache_entry_is_evicted_and_downloaded_again(
    tmp_path: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "uv-cache"
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    lock = make_lock(local_index)
    first = sync(
        lock=lock,
        project="demo",
        notebook=Path("a.ipynb"),
        settings=settings_at(tmp_path / "a", local_index.url),
    )
    original = _module(first).read_bytes()
    [entry] = _cached_copies(original, cache)
    entry.write_bytes(original + b"CORRUPTED = True\n")

    events: list[ProgressEvent] = []
    second = sync(
        lock=lock,
        project="demo",
        notebook=Path("b.ipynb"),
        settings=settings_at(tmp_path / "b", local_index.url),
        progress=events.append,
    )
    assert _module(second).read_bytes() == original
    assert second.drift.clean
    assert any(e.phase == "repair" and "alpha" in e.message for e in events)
    assert not any(p.read_bytes() != original for p in (cache / "archive-v0").glob("*/alpha/__init__.py"))


def _lying_wheel(local_index: LocalIndex) -> None:
    """A wheel whose RECORD names a hash its own module does not have."""
    name = "liar"
    if name in local_index.files:
        return
    body = b"VALUE = 1\n"
    meta = b"Metadata-Version: 2.1\nName: liar\nVersion: 1.0.0\n"
    wheel_meta = b"Wheel-Version: 1.0\nGenerator: envsync-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    claimed = _record_hash(b"VALUE = 2\n")
    record = (
        f"liar/__init__.py,{claimed},{len(body)}\n"
        f"liar-1.0.0.dist-info/METADATA,{_record_hash(meta)},{len(meta)}\n"
        f"liar-1.0.0.dist-info/WHEEL,{_record_hash(wheel_meta)},{len(wheel_meta)}\n"
        "liar-1.0.0.dist-info/RECORD,,\n"
    )
    path = local_index.root / "files" / "liar-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, data in [
            ("liar/__init__.py", body),
            ("liar-1.0.0.dist-info/METADATA", meta),
            ("liar-1.0.0.dist-info/WHEEL", wheel_meta),
            ("liar-1.0.0.dist-info/RECORD", record.encode()),
        ]:
            zf.writestr(zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0)), data)
    local_index.files[name] = [path]
    local_index._write_pages()


def test_a_wheel_whose_files_never_match_its_record_fails_the_build_naming_the_file(
    tmp_path: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    _lying_wheel(local_index)
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index, {"ipykernel": "6.0.0", "comm": "0.2.0", "liar": "1.0.0"})
    with pytest.raises(InstallError, match=r"liar/__init__\.py \(modified\)") as err:
        sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    assert err.value.exit_code == 1 and "even after a fresh download" in str(err.value)
    assert store.ready_envs(settings, lock.fingerprint) == []


def test_the_pip_installer_records_and_checks_files_too(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index)
    result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, backend="pip")
    record = files.load(result.env)
    assert record is not None and set(record) == {"alpha", "beta", "comm", "ipykernel"}
    assert "pip" not in record  # the venv tool's own seed is not the lock's
    module = _module(result, "beta")
    original = module.read_bytes()
    module.write_text("raise SystemExit('tampered')\n")
    assert [(d.name, d.kind) for d in check_lock(lock=lock, settings=settings).differences] == [
        ("beta", "modified")
    ]
    fixed = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, repair=True)
    assert fixed.repaired == ("beta",) and fixed.drift.clean and fixed.backend == "pip"
    assert module.read_bytes() == original


def test_imports_writing_byte_code_are_not_drift(tmp_path: Path, local_index: LocalIndex) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index)
    result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    proc.run([result.python, "-m", "compileall", "-q", _site(result.env)], timeout=120)
    assert list(_site(result.env).glob("alpha/__pycache__/*.pyc"))
    assert check_lock(lock=lock, settings=settings).clean
    assert check_lock(lock=lock, settings=settings, deep=True).clean


def test_an_env_without_a_file_record_is_verified_against_record_and_given_one(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    settings = settings_at(tmp_path, local_index.url)
    lock = make_lock(local_index)
    result = sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings)
    (result.env / files.FILES).unlink()  # as an env built before file records existed
    with _module(result).open("a") as fh:
        fh.write("x = 1\n")
    assert [d.kind for d in check_lock(lock=lock, settings=settings).differences] == ["modified"]
    sync(lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings, repair=True)
    assert files.load(result.env) is not None and check_lock(lock=lock, settings=settings).clean


def test_files_a_hard_linking_installer_shared_with_its_cache_are_made_the_env_s_own(
    tmp_path: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envsync.env.installers import uv as uv_installer

    cache = tmp_path / "uv-cache"
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    monkeypatch.setattr(uv_installer, "LINK_MODE", "hardlink")
    lock = make_lock(local_index)
    result = sync(
        lock=lock, project="demo", notebook=Path("n.ipynb"), settings=settings_at(tmp_path, local_index.url)
    )
    module = _module(result)
    original = module.read_bytes()
    [cached] = _cached_copies(original, cache)
    assert os.stat(module).st_nlink == 1 and os.stat(module).st_ino != os.stat(cached).st_ino
    with module.open("a") as fh:
        fh.write("TAMPERED = True\n")
    assert cached.read_bytes() == original


def test_launch_repairs_a_tampered_env_before_the_gateway_starts_and_fails_when_it_cannot(
    tmp_path: Path,
    settings: Settings,
    locked_template: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typing import Any

    from envsync.env import installers
    from envsync.errors import GatewayError, ToolError
    from envsync.gateway import process
    from envsync.ops.launch import LaunchRequest, launch

    nb, module = _synced_notebook(tmp_path, settings, locked_template, capsys)
    original = module.read_bytes()
    seen_at_start: list[bytes] = []

    def start(spec: Any, **_kwargs: Any) -> Any:
        seen_at_start.append(module.read_bytes())
        raise GatewayError("stopped here: the test only looks at the env the gateway would get")

    monkeypatch.setattr(process, "start", start)
    module.write_bytes(original + b"TAMPERED = True\n")
    with pytest.raises(GatewayError, match="stopped here"), launch(LaunchRequest(nb), settings=settings):
        raise AssertionError("unreachable")
    assert seen_at_start == [original]

    module.write_bytes(original + b"TAMPERED = True\n")
    real = installers.choose

    def broken(name: str | None) -> Any:
        be = real(name)

        def fail(*_a: Any, **_k: Any) -> None:
            raise ToolError("injected: the installer cannot run")

        monkeypatch.setattr(be, "install", fail)
        return be

    monkeypatch.setattr(installers, "choose", broken)
    with pytest.raises(InstallError), launch(LaunchRequest(nb), settings=settings):
        raise AssertionError("unreachable")
    assert seen_at_start == [original]  # the gateway never started on the tampered env


def test_record_rows_outside_site_packages_are_kept_inside_the_env_and_the_rest_left_out(
    tmp_path: Path,
) -> None:
    env = tmp_path / "env"
    info = env / "lib" / "python3.11" / "site-packages" / "demo-1.0.dist-info"
    info.mkdir(parents=True)
    h = "sha256=" + "A" * 43
    rows = [
        f"demo/__init__.py,{h},12",
        f"demo/./sub/x.py,{h},",  # a `.` part: normalised
        f"../../../bin/demo-tool,{h},40",  # a console script, outside site-packages but in the env
        f"../../../../outside.py,{h},1",  # leaves the env
        f"/etc/passwd,{h},1",  # absolute
        f"demo/__pycache__/x.cpython-311.pyc,{h},3",  # byte code
        "demo-1.0.dist-info/RECORD,,",  # no hash
        f'"demo/with, comma.py",{h},7',  # CSV quoting
    ]
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    site = "lib/python3.11/site-packages"
    assert wheel_record.read_record(env, info) == [
        (f"{site}/demo/__init__.py", h, 12),
        (f"{site}/demo/sub/x.py", h, None),
        ("bin/demo-tool", h, 40),
        (f"{site}/demo/with, comma.py", h, 7),
    ]


def test_cached_files_hashed_once_are_not_read_again_until_one_of_them_changes(
    tmp_path: Path, local_index: LocalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "uv-cache"
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    monkeypatch.setenv("ENVSYNC_JOBS", "1")  # the hashes are counted in this process
    lock = make_lock(local_index)
    settings = settings_at(tmp_path / "home", local_index.url)
    hashed: list[str] = []
    real = files._hash_file

    def counting(path: str) -> tuple[str, os.stat_result] | None:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(files, "_hash_file", counting)

    def build(**kw: object) -> SyncResult:
        hashed.clear()
        return sync(lock=lock, project="demo", notebook=Path("a.ipynb"), settings=settings, **kw)  # type: ignore[arg-type]

    def modules(result: SyncResult) -> list[str]:
        return [p for p in hashed if p.startswith(f"{_site(result.env)}/alpha/")]

    first = build()
    assert modules(first) and any(p.startswith(str(cache)) for p in hashed)  # copies and their sources
    store.discard(settings, first.env)
    second = build()
    assert second.env != first.env and second.drift.clean
    assert modules(second) == []  # copied from sources hashed by the first build
    # A source changed in place, its size and mtime put back: its ctime still tells.
    original = _module(second).read_bytes()
    [entry] = _cached_copies(original, cache)
    st = entry.stat()
    entry.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns))
    store.discard(settings, second.env)
    events: list[ProgressEvent] = []
    third = build(progress=events.append)
    assert modules(third)
    assert any(e.phase == "repair" and "alpha" in e.message for e in events)
    assert _module(third).read_bytes() == original and third.drift.clean
