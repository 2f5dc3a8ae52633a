"""Reading and hand-editing a notebook's manifest in tests, as a collaborator with an editor would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envsync.lock.model import Artifact, LockedPackage, compute_fingerprint
from envsync.notebook import file as notebook


def manifest_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())["metadata"]["envsync"]


def locked_versions(path: Path) -> dict[str, str]:
    return {p["name"]: p["version"] for p in manifest_of(path)["lock"]["packages"]}


def replace_manifest(path: Path, value: Any) -> Path:
    """Write `value` as metadata.envsync, whatever it is (tests feed wrong types too)."""
    raw = path.read_text(encoding="utf-8")
    path.write_text(notebook.splice_manifest(raw, value), encoding="utf-8")
    return path


def edit_manifest(path: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    """Change metadata.envsync in place by hand; what `change` returns is ignored."""
    data = manifest_of(path)
    change(data)
    return replace_manifest(path, data)


def tamper_first_hash(manifest: dict[str, Any], name: str) -> None:
    """Flip the first wheel hash of `name` (same version, other file)."""
    pkg = next(p for p in manifest["lock"]["packages"] if p["name"] == name)
    old = pkg["wheels"][0]["hashes"]["sha256"]
    pkg["wheels"][0]["hashes"]["sha256"] = ("0" if old[0] != "0" else "1") + old[1:]


def refresh_fingerprint(manifest: dict[str, Any]) -> None:
    """Recompute the fingerprint after a hand edit, so the lock is self-consistent again.

    Tolerant on purpose: tests also fingerprint locks that envsync must refuse for other reasons.
    """
    lock = manifest["lock"]
    pkgs = [
        LockedPackage(
            name=p["name"],
            version=p["version"],
            marker=p.get("marker"),
            requires_python=p.get("requires-python"),
            wheels=tuple(Artifact(w["name"], w["hashes"]["sha256"]) for w in p.get("wheels", [])),
            sdist=Artifact(p["sdist"]["name"], p["sdist"]["hashes"]["sha256"]) if p.get("sdist") else None,
        )
        for p in lock["packages"]
    ]
    lock["tool"]["envsync"]["fingerprint"] = compute_fingerprint(pkgs)
