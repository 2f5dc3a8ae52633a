"""The hashed requirements format: what the installers install from, and what export writes.

Import reads requirements files with a small line reader over packaging's Requirement:
pip's grammar is short (continuations, comments, -r/-c, a few options, --hash), and a
reader of our own can name the file and line of every refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envsync import rules
from envsync.errors import EnvsyncError, LockError
from envsync.formats.files import read_text
from envsync.formats.hashed import hashed_requirements
from envsync.formats.imported import Imported
from envsync.lock.model import Lock, packages_for
from envsync.lock.targets import TARGETS, marker_environment

_COMMENT = re.compile(r"(^|\s+)#.*$")


def export_requirements(lock: Lock, *, target: str, python: str) -> str:
    """A hashed requirements file for one platform, installable with --require-hashes."""
    pkgs = packages_for(lock, marker_environment(TARGETS[target], python))
    header = f"# envsync lock {lock.fingerprint}\n# for {target}, CPython {python}\n"
    indexes = sorted({p.index for p in pkgs if p.index})
    if len(indexes) == 1:
        header += f"--index-url {indexes[0]}\n"
    return header + hashed_requirements(pkgs)


_REFUSED = "refused on purpose: envsync locks packages from an index"
_OPTIONS_WITH_VALUE = {
    "-r": "requirement", "--requirement": "requirement", "-c": "constraint", "--constraint": "constraint",
    "-i": "index-url", "--index-url": "index-url", "--extra-index-url": "extra-index-url",
    "-f": "find-links", "--find-links": "find-links", "-e": "editable", "--editable": "editable",
    "--trusted-host": "trusted-host", "--only-binary": "only-binary", "--no-binary": "no-binary",
}
_FLAGS_NOTED = {"--pre", "--prefer-binary", "--require-hashes", "--no-deps", "--no-index"}


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) per logical line: continuations joined, comments dropped."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        line = _COMMENT.sub("", raw)
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        joined = " ".join(part.strip() for part in buf).strip()
        buf = []
        if joined:
            yield start, joined
    if buf and " ".join(buf).strip():
        yield start, " ".join(part.strip() for part in buf).strip()


def read_requirements_file(path: Path) -> Imported:
    """A requirements.txt with its -r/-c includes (relative to the including file), hashes and index."""
    out = Imported(kind="requirements")
    _read_into(path, out, seen=set(), constraint=False)
    return out


def _read_into(path: Path, out: Imported, *, seen: set[Path], constraint: bool) -> None:
    real = path.resolve()
    if real in seen:
        # A loop, or two files including the same third: each file is read once.
        out.notes.append(f"{path}: included again: read once")
        return
    seen.add(real)
    for n, line in logical_lines(read_text(path)):
        where = f"{path}:{n}"
        tokens = line.split()
        if tokens[0].startswith("-"):
            _option(tokens, path, where, out, seen=seen, constraint=constraint)
        else:
            _requirement(tokens, where, out, constraint=constraint)


def _option(tokens: list[str], path: Path, where: str, out: Imported, *, seen: set[Path], constraint: bool) -> None:
    opt, _, value = tokens[0].partition("=")
    if opt in _FLAGS_NOTED:
        out.notes.append(f"{where}: {opt} is not taken")
        return
    kind = _OPTIONS_WITH_VALUE.get(opt)
    if kind is None:
        raise EnvsyncError(f"{where}: unknown option {rules.shown(opt)!r}")
    value = value or (tokens[1] if len(tokens) > 1 else "")
    if not value:
        raise EnvsyncError(f"{where}: {opt} needs a value")
    if kind in ("requirement", "constraint"):
        included = path.parent / value
        if not included.is_file():
            raise EnvsyncError(f"{where}: {opt} {rules.shown(value)!r}: no such file (relative to {path.parent})")
        _read_into(included, out, seen=seen, constraint=constraint or kind == "constraint")
    elif kind == "index-url":
        if not rules.is_index_url(value):
            raise EnvsyncError(f"{where}: index {rules.shown(value)!r} is not an http(s) URL")
        if out.index and out.index.rstrip("/") != value.rstrip("/"):
            raise EnvsyncError(f"{where}: a second --index-url ({rules.shown(value)}); envsync locks from one index")
        out.index = value
    elif kind in ("extra-index-url", "find-links"):
        raise EnvsyncError(
            f"{where}: {opt} is refused on purpose: envsync locks every package from one index",
            hint="import with one --index-url (allowed with `envsync index allow URL`)",
        )
    elif kind == "editable":
        raise EnvsyncError(f"{where}: an editable install is {_REFUSED}")
    else:
        out.notes.append(f"{where}: {opt} is not taken")


def _requirement(tokens: list[str], where: str, out: Imported, *, constraint: bool) -> None:
    hashes = {t.split("=", 1)[1] for t in tokens if t.startswith("--hash=")}
    rest = [t for t in tokens if not t.startswith("--hash=")]
    text = " ".join(rest)
    if "://" in text or "@" in text.split(";")[0] or rest[0].startswith((".", "/", "~")) or rest[0].endswith((".whl", ".tar.gz", ".zip")):
        raise EnvsyncError(f"{where}: {rules.shown(text)!r} is a URL, VCS link or path: {_REFUSED}")
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise EnvsyncError(f"{where}: invalid requirement {rules.shown(text)!r}: {str(exc).splitlines()[0]}") from None
    if hashes:
        bad = sorted(h for h in hashes if not (h.startswith("sha256:") and rules.is_sha256(h[7:])))
        if bad:
            raise EnvsyncError(f"{where}: only sha256 hashes are kept, not {rules.shown(bad[0])!r}")
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        out.hashes[canonicalize_name(req.name)] = (pinned[0] if pinned else "", frozenset(h[7:] for h in hashes), where)
    into = out.constraints if constraint else out.dependencies
    if str(req) not in into:
        into.append(str(req))


def check_hashes(imported: Imported, lock: Lock) -> None:
    """Each package the source pinned with --hash is locked at that version with one of those files."""
    by_name = lock.by_name()
    for name, (version, wanted, where) in sorted(imported.hashes.items()):
        locked = by_name.get(name, [])
        if not locked:
            continue
        ok = any(
            (not version or p.version == version) and wanted & {a.sha256 for a in (*p.wheels, *([p.sdist] if p.sdist else []))}
            for p in locked
        )
        if not ok:
            got = ", ".join(sorted({p.version for p in locked}))
            raise LockError(
                f"{name}: the lock's files ({got}) match none of the --hash values at {where}",
                hint="the index serves other files than the ones that file was made from",
            )
