"""Target environments: the platforms a lock must cover, as marker values and wheel tags."""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from envsync.errors import LockError, ManifestError

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

# packaging's markers and specifiers are imported where they are used: a command that
# reads a manifest it has accepted before (see envsync.notebook.accepted) needs neither.

# CPython minor versions a lock may be asked to cover; newest last.
KNOWN_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")


@dataclass(frozen=True)
class Target:
    """One desktop platform: what its markers say and which wheel platform tags it takes."""

    name: str
    sys_platform: str
    platform_system: str
    platform_machine: str
    os_name: str
    platform_tag: re.Pattern[str]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "linux-x86_64", "linux", "Linux", "x86_64", "posix",
            re.compile(r"^(manylinux\d*(_\d+_\d+)?_x86_64|linux_x86_64)$"),
        ),
        Target(
            "linux-aarch64", "linux", "Linux", "aarch64", "posix",
            re.compile(r"^(manylinux\d*(_\d+_\d+)?_aarch64|linux_aarch64)$"),
        ),
        Target(
            "macos-arm64", "darwin", "Darwin", "arm64", "posix",
            re.compile(r"^macosx_\d+_\d+_(arm64|universal2)$"),
        ),
        Target(
            "macos-x86_64", "darwin", "Darwin", "x86_64", "posix",
            re.compile(r"^macosx_\d+_\d+_(x86_64|universal2|intel|universal)$"),
        ),
        Target(
            "windows-x86_64", "win32", "Windows", "AMD64", "nt",
            re.compile(r"^win_amd64$"),
        ),
    )
}


def check_target_names(names: list[str] | tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ManifestError(
            f"unknown target environment {unknown[0]!r}",
            hint=f"choose from: {', '.join(TARGETS)}",
        )


def pythons_in_range(requires_python: str) -> list[str]:
    """The CPython minor versions that a requires-python range admits."""
    spec = parse_requires_python(requires_python)
    found = [v for v in KNOWN_PYTHONS if _minor_admitted(spec, v)]
    if not found:
        raise LockError(
            f"requires-python {requires_python!r} admits no CPython from "
            f"{KNOWN_PYTHONS[0]} to {KNOWN_PYTHONS[-1]}",
            hint="use a range such as '==3.11.*' or '>=3.11'",
        )
    return found


def requires_python_for(text: str) -> str | None:
    """A --python value as requires-python: `3.11` means `==3.11.*`, a range stays a range.

    None when the text is neither; a range must admit at least one CPython in KNOWN_PYTHONS.
    """
    t = text.strip()
    if re.fullmatch(r"\d+\.\d+", t):
        return f"=={t}.*"
    if not t or not any(op in t for op in "<>=!~"):
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        spec = SpecifierSet(t)
    except InvalidSpecifier:
        return None
    text = str(spec)
    pythons_in_range(text)
    return text


def _minor_admitted(spec: SpecifierSet, minor: str) -> bool:
    # A minor is in range if any of its releases is: probe .0 and a late patch.
    return any(spec.contains(f"{minor}.{patch}", prereleases=True) for patch in (0, 99))


def parse_requires_python(text: str) -> SpecifierSet:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise ManifestError(f"requires-python {text!r} is not a valid version range") from exc


def marker_environment(target: Target, python: str, *, full_version: str | None = None) -> dict[str, str]:
    """The PEP 508 marker values of CPython `python` on `target`."""
    full = full_version or f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": target.os_name,
        "platform_machine": target.platform_machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": target.platform_system,
        "platform_version": "",
        "python_full_version": full,
        "python_version": python,
        "sys_platform": target.sys_platform,
    }


def marker_applies(marker: str | None, env: dict[str, str]) -> bool:
    if not marker:
        return True
    from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName

    try:
        return Marker(marker).evaluate(env)
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName, ValueError) as exc:
        raise LockError(f"invalid marker in lock: {marker[:120]!r}") from exc


def wheel_fits(filename: str, target: Target, python: str) -> bool:
    """Could CPython `python` on `target` install this wheel?"""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    major, minor = (int(p) for p in python.split("."))
    for tag in tags:
        if tag.platform != "any" and not target.platform_tag.match(tag.platform):
            continue
        if _interpreter_fits(tag.interpreter, tag.abi, major, minor):
            return True
    return False


def _interpreter_fits(interpreter: str, abi: str, major: int, minor: int) -> bool:
    m = re.fullmatch(r"(py|cp)(\d)(\d*)", interpreter)
    if not m:
        return False
    kind, tag_major, tag_minor = m.group(1), int(m.group(2)), m.group(3)
    if tag_major != major:
        return False
    if kind == "py":
        return tag_minor == "" or int(tag_minor) <= minor
    if tag_minor == "":
        return False
    if abi == "abi3":
        return int(tag_minor) <= minor
    # cp311-cp311, cp313-cp313t (free-threaded builds are not a desktop default: skip them)
    return int(tag_minor) == minor and abi in (f"cp{major}{minor}", "none")


def current_target() -> Target | None:
    """The target this machine is, if it is one of ours."""
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        name = {"x86_64": "linux-x86_64", "amd64": "linux-x86_64", "aarch64": "linux-aarch64", "arm64": "linux-aarch64"}.get(machine)
    elif sys.platform == "darwin":
        name = "macos-arm64" if machine == "arm64" else "macos-x86_64"
    elif sys.platform == "win32":
        name = "windows-x86_64"
    else:
        name = None
    return TARGETS.get(name) if name else None
