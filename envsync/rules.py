"""The shapes envsync accepts for names, hashes and URLs that come from someone else's notebook.

One place for each rule: the manifest schema (`schemas/`), the lock, the installers, the
kernelspecs and the gateway all check against these, so what one command refuses to
read, every command refuses. Each `is_*` predicate uses `fullmatch`: `$` in `re.match`
would let a trailing newline through into a path or a command line.
"""

from __future__ import annotations

import re

from envsync.errors import ManifestError

# PEP 508 distribution name (normalised with `canonical_name`).
PACKAGE_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?"
# A PEP 440 version as it may appear in a requirements line: no spaces, no option syntax.
VERSION_TEXT = r"[A-Za-z0-9.+!_-]+"
SHA256 = r"[0-9a-f]{64}"
DIGEST = r"sha256:[0-9a-f]{64}"
# A wheel or sdist file name as a lock lists it (no directory, no URL).
ARTIFACT_FILE = r"[A-Za-z0-9][A-Za-z0-9._+-]*\.(?:whl|tar\.gz|zip)"
# A package index: http(s), and nothing that could end a quoted or escaped argument.
INDEX_URL = r"https?://[^\s\"'\\]+"
# The project slug becomes a folder and a kernel name on every collaborator's machine.
PROJECT_SLUG = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
# Jupyter's own kernel-name alphabet, starting with a letter or digit (so never `.` or `..`).
KERNEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}"

_PACKAGE_NAME = re.compile(PACKAGE_NAME)
_VERSION_TEXT = re.compile(VERSION_TEXT)
_SHA256 = re.compile(SHA256)
_DIGEST = re.compile(DIGEST)
_ARTIFACT_FILE = re.compile(ARTIFACT_FILE)
_INDEX_URL = re.compile(INDEX_URL)
_PROJECT_SLUG = re.compile(PROJECT_SLUG)
_KERNEL_NAME = re.compile(KERNEL_NAME)
_NAME_SEPARATORS = re.compile(r"[-_.]+")


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_package_name(value: object) -> bool:
    return _matches(_PACKAGE_NAME, value)


def is_version_text(value: object) -> bool:
    return _matches(_VERSION_TEXT, value)


def is_sha256(value: object) -> bool:
    """64 lower-case hex digits."""
    return _matches(_SHA256, value)


def is_digest(value: object) -> bool:
    """`sha256:` and 64 lower-case hex digits (a lock's inputs and fingerprint)."""
    return _matches(_DIGEST, value)


def is_artifact_file(value: object) -> bool:
    return _matches(_ARTIFACT_FILE, value)


def is_index_url(value: object) -> bool:
    return _matches(_INDEX_URL, value)


def is_project_slug(value: object) -> bool:
    return _matches(_PROJECT_SLUG, value)


def is_kernel_name(value: object) -> bool:
    return _matches(_KERNEL_NAME, value)


def canonical_name(name: str) -> str:
    """PEP 503's normal form of a distribution name, as `packaging.utils.canonicalize_name`.

    The same rule written here, so that reading a lock or an env does not import
    packaging's tags and markers machinery (the tests hold the two equal).
    """
    return _NAME_SEPARATORS.sub("-", name).lower()


def shown(value: object, limit: int = 80) -> str:
    """An untrusted value cut to a length that fits one error line."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_project(name: object) -> str:
    """The project slug, or ManifestError: it names folders and the kernel on every machine."""
    if not is_project_slug(name):
        raise ManifestError(
            f"project name {shown(name)!r} is not a valid slug",
            hint="use 1-64 lowercase letters, digits and dashes, e.g. sales-forecast",
        )
    assert isinstance(name, str)
    return name
