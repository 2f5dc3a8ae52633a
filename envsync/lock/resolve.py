"""Declared dependencies → Lock, through `uv pip compile --universal --generate-hashes`.

uv writes a full pylock.toml (every wheel of every release file, with URLs); we keep
the PEP 751 model but make it compact: the package names its index, each wheel is a
file name and a sha256, and wheels that fit none of the target platforms × CPython
versions are left out. A package keeps its sdist only where no wheel covers a target.
"""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from envsync import proc, tooloutput, uv
from envsync.errors import ResolutionError, ToolError
from envsync.lock.model import Artifact, Lock, LockedPackage, LockInputs, compute_fingerprint
from envsync.lock.pylock import pylock_text
from envsync.lock.targets import (
    TARGETS,
    Target,
    marker_applies,
    marker_environment,
    pythons_in_range,
    wheel_fits,
)
from envsync.settings import Settings


def resolve(
    inputs: LockInputs,
    *,
    settings: Settings,
    previous: Lock | None = None,
    upgrade: bool = False,
    upgrade_packages: Iterable[str] = (),
    progress: Callable[[str], None] | None = None,
    constraints: Iterable[str] = (),
    exclude_newer: str | None = None,
) -> Lock:
    """Resolve the declared dependencies plus the kernel's own into a compact universal Lock.

    `constraints` (pins another tool locked) and `exclude_newer` (a date that tool resolved
    at) hold this one resolution to that tool's versions; neither is stored in the lock.
    """
    settings.require_index_allowed(inputs.index)
    pythons = pythons_in_range(inputs.requires_python)
    with tempfile.TemporaryDirectory(prefix="envsync-resolve-") as tmp:
        work = Path(tmp)
        reqs = work / "requirements.in"
        reqs.write_text("".join(f"{d}\n" for d in inputs.requirements))
        out = work / "pylock.toml"
        if previous is not None and not upgrade:
            # uv treats an existing output file as preferences: unchanged pins stay put.
            out.write_text(pylock_text(previous))
        cmd = [
            *uv.command("pip", "compile", offline=settings.offline),
            str(reqs),
            "--output-file", str(out),
            "--format", "pylock.toml",
            "--universal",
            "--generate-hashes",
            "--no-header",
            "--no-annotate",
            "--python-version", pythons[0],
            "--default-index", inputs.index,
        ]
        pins = list(constraints)
        if pins:
            cons = work / "constraints.txt"
            cons.write_text("".join(f"{c}\n" for c in pins))
            cmd += ["--constraint", str(cons)]
        if exclude_newer:
            cmd += ["--exclude-newer", exclude_newer]
        if upgrade:
            cmd.append("--upgrade")
        for name in upgrade_packages:
            cmd += ["--upgrade-package", name]
        try:
            proc.run(
                cmd,
                env=proc.clean_env(),
                timeout=900,
                what="uv pip compile",
                on_stderr_line=progress,
            )
        except ToolError as exc:
            raise ResolutionError(_reason(exc.stderr, inputs.index), detail=exc.stderr) from None
        data = tomllib.loads(out.read_text(encoding="utf-8"))
    return build_lock(data, inputs=inputs, pythons=pythons)


def _reason(stderr: str, index: str) -> str:
    """One line out of uv's report: why resolution failed."""
    lines = tooloutput.reason_lines(stderr)
    if tooloutput.looks_unreachable(stderr):
        return f"cannot reach the package index {index}"
    for ln in lines:
        if ln.startswith("Because") or "was not found in the package registry" in ln:
            return "cannot resolve: " + ln.rstrip(".") + "."
    return "cannot resolve the dependencies: " + (lines[-1] if lines else "uv gave no reason")


def build_lock(data: dict[str, Any], *, inputs: LockInputs, pythons: list[str]) -> Lock:
    """Turn uv's pylock data into our compact Lock for the targets of `inputs`."""
    combos = [(TARGETS[t], py) for t in inputs.environments for py in pythons]
    packages = []
    for raw in data.get("packages", []):
        marker = raw.get("marker")
        applies = [(t, py) for t, py in combos if marker_applies(marker, marker_environment(t, py))]
        if not applies:
            continue  # only for platforms we do not target
        marker = simplify_marker(marker, combos)
        wheels = []
        for w in raw.get("wheels", []):
            name = w.get("name") or _file_name(w.get("url") or w.get("path") or "")
            if any(wheel_fits(name, t, py) for t, py in applies):
                wheels.append(Artifact(name=name, sha256=w["hashes"]["sha256"]))
        uncovered = [
            (t, py) for t, py in applies if not any(wheel_fits(w.name, t, py) for w in wheels)
        ]
        sdist = None
        if uncovered and raw.get("sdist"):
            s = raw["sdist"]
            sdist = Artifact(
                name=s.get("name") or _file_name(s.get("url") or s.get("path") or ""),
                sha256=s["hashes"]["sha256"],
            )
        if not wheels and sdist is None:
            where = ", ".join(sorted({f"{t.name} py{py}" for t, py in uncovered}))
            raise ResolutionError(f"{raw['name']} {raw['version']} has no file for {where}")
        packages.append(
            LockedPackage(
                name=raw["name"],
                version=raw["version"],
                marker=marker,
                requires_python=raw.get("requires-python"),
                index=inputs.index,
                wheels=tuple(sorted(wheels, key=lambda a: a.name)),
                sdist=sdist,
            )
        )
    packages.sort(key=lambda p: (p.key, p.version, p.marker or ""))
    return Lock(
        requires_python=inputs.requires_python,
        packages=tuple(packages),
        inputs=inputs.digest,
        fingerprint=compute_fingerprint(packages),
        environments=tuple(inputs.environments),
    )


def simplify_marker(marker: str | None, combos: list[tuple[Target, str]]) -> str | None:
    """Drop `and` clauses that hold on every target (uv's `python_full_version >= '3.11'`).

    uv words the same condition differently from one run to the next; without this a
    re-lock that changes nothing would still show every package as changed.
    """
    if not marker or "(" in marker or " or " in marker:
        return marker
    kept = [
        clause.strip()
        for clause in marker.split(" and ")
        if not all(marker_applies(clause, marker_environment(t, py)) for t, py in combos)
    ]
    return " and ".join(sorted(kept)) or None


def _file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].split("#", 1)[0]
