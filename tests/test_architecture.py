"""The layout docs/architecture.md describes, held against the code: who may import whom, sizes, lint."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "envsync"

# Each room may import the rooms of earlier layers and its own, never a later one.
LAYERS: list[set[str]] = [
    {"", "errors", "settings", "rules", "fsutil", "proc", "procfork", "procinfo", "tooloutput", "uv", "ssh"},
    {"lock"},
    {"notebook", "formats"},
    {"env"},
    {"jupyter"},
    {"gateway"},
    {"ops"},
    {"cli"},
    {"__main__"},
]
_LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "envsync":
                found.update(f"envsync.{a.name}" for a in node.names)
            elif node.module.startswith("envsync."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("envsync"))
    return found


def test_every_room_is_placed_in_a_layer() -> None:
    rooms = {_room(name) for name, _path in _modules()}
    assert rooms <= set(_LAYER), f"rooms missing from LAYERS (and docs/architecture.md): {rooms - set(_LAYER)}"


def test_no_room_imports_a_later_room() -> None:
    backwards = []
    for name, path in _modules():
        here = _room(name)
        for target in _imports(path):
            there = _room(target)
            if there in _LAYER and _LAYER[there] > _LAYER[here]:
                backwards.append(f"{path.relative_to(ROOT)} imports {target}")
    assert backwards == []


def test_rooms_of_one_layer_do_not_import_each_other() -> None:
    across = []
    for name, path in _modules():
        here = _room(name)
        if _LAYER[here] == 0:
            continue
        for target in _imports(path):
            there = _room(target)
            if there != here and _LAYER.get(there) == _LAYER[here]:
                across.append(f"{path.relative_to(ROOT)} imports {target}")
    assert across == []


def test_only_proc_starts_processes() -> None:
    users = [
        str(path.relative_to(ROOT))
        for _name, path in _modules()
        if path.name != "proc.py"
        and any(
            (isinstance(n, ast.Import) and any(a.name in ("subprocess", "multiprocessing") for a in n.names))
            or (isinstance(n, ast.ImportFrom) and n.module in ("subprocess", "multiprocessing"))
            for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    ]
    assert users == []


def test_no_module_is_over_350_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for _name, path in _modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 350
    }
    assert long == {}


def test_the_cli_start_does_not_import_the_gateway_server() -> None:
    code = "import sys, envsync.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tornado', 'jupyter_server', 'kernel_gateway', 'jsonschema', 'rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: `pip install -e .[dev]` (scripts/test.sh does)"
    return found


def test_ruff_finds_nothing() -> None:
    out = subprocess.run(
        [_tool("ruff"), "check", "envsync", "tests", "benchmarks"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    out = subprocess.run([_tool("mypy")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
