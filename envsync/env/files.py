"""File-level parity: every file a distribution's RECORD lists, checked against the env.

A wheel's `RECORD` names each installed file with its sha256 and size. At install the
env's files are hashed against it (a copy that does not match came from a corrupted
cache entry or wheel), and each file's size, mtime and hash are kept in
`envsync-files.json` beside the ready marker. Later checks read that record:

- the fast check stats every recorded file and compares size and mtime (an edit,
  a truncation, a deleted module), in tens of milliseconds for a data-science stack;
- the deep check rehashes every file against its RECORD hash.

Files RECORD lists without a hash (RECORD itself) and byte code (`*.pyc`, which
Python rewrites on import) are not recorded.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envsync import procfork
from envsync.env.wheel_record import read_record, record_hash
from envsync.fsutil import atomic_write_text, stat_each

if TYPE_CHECKING:
    from envsync.env.cachememo import CacheMemo

FILES = "envsync-files.json"
FORMAT = 1


class Problem(enum.StrEnum):
    """How one recorded file differs; the values are what `--json` shows."""

    MODIFIED = "modified"
    MISSING = "missing"


@dataclass(frozen=True)
class FileProblem:
    path: str  # relative to the env's root
    problem: Problem


class Entry(NamedTuple):
    """One installed file as recorded after its hash was verified (a tuple: tens of thousands load at once)."""

    path: str  # relative to the env's root, with `/`
    size: int
    mtime_ns: int
    digest: str  # RECORD's `sha256=<urlsafe base64, no padding>`


Entries = dict[str, list[Entry]]  # canonical distribution name -> its files
Problems = dict[str, list[FileProblem]]


def _hash_file(path: str) -> tuple[str, os.stat_result] | None:
    """The file's RECORD hash and its stat (of the file hashed), or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            return record_hash(hashlib.file_digest(fh, "sha256").digest()), st
    except OSError:
        return None


# Threads only contend for the interpreter lock here (measured on 11,847 files: 0.5 s to
# hash them in one thread, 0.7 s in two, 1.1 s in four), so the checks below share the work
# with the other cores by forking (`procfork`), one part of the distributions each.

_Part = list[tuple[str, Path]]


def verify(env: Path, dist_infos: Mapping[str, Path], memo: CacheMemo | None = None) -> tuple[Record, Problems]:
    """Hash every file the RECORDs list; the record of each file, and the files that differ.

    A matching file that is hard-linked elsewhere is replaced by a copy of its own first.
    With `memo`, a file copied from a cached file already hashed (and unchanged since) is
    taken without hashing it again, and the cached sources of files hashed now are remembered.
    """
    if memo is not None:
        memo.prepare()  # once, before the work is split

    def weight(item: tuple[str, Path]) -> int:
        # Its files, and what a distribution costs whatever its size (finding its cached
        # source, reading RECORD): about as much as 60 files. RECORD's size in bytes made
        # the parts uneven (84 and 141 ms): long paths are not more files.
        try:
            with open(item[1] / "RECORD", "rb") as fh:
                return fh.read().count(b"\n") + 60
        except OSError:
            return 60

    parts = procfork.balanced(list(dist_infos.items()), weight, procfork.cores())
    record: Record = {}
    problems: Problems = {}
    # Columns travel from a forked part much faster than tens of thousands of tuples.
    for found, differ, remembered in procfork.split_map(lambda part: _verify_part(env, part, memo), parts):
        record.update(found)
        problems.update(differ)
        if memo is not None:
            memo.extend(remembered)
    if memo is not None:
        memo.save()
    return record, dict(sorted(problems.items()))


def _verify_part(env: Path, part: _Part, memo: CacheMemo | None) -> tuple[Record, Problems, list[str]]:
    found: Record = {}
    problems: Problems = {}
    for name, info in part:
        cols, differ = _verify_dist(env, info, memo)
        if cols is not None:
            found[name] = cols
        if differ:
            problems[name] = differ
    return found, problems, memo.take_new() if memo is not None else []


def _verify_dist(env: Path, info: Path, memo: CacheMemo | None) -> tuple[Columns | None, list[FileProblem]]:
    """One distribution's files: each taken by `memo` from its cached source, or hashed against RECORD."""
    root = str(env) + os.sep
    rows = read_record(env, info)
    if memo is not None:
        now = stat_each(root + path for path, _want, _size in rows)
        sources, known = memo.copies(env, info, rows, now)
    else:  # every file is hashed, and stat'ed as it is read
        now, sources, known = [None] * len(rows), [None] * len(rows), [False] * len(rows)
    paths: list[str] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    digests: list[str] = []
    problems: list[FileProblem] = []
    for (path, want, size), st, source, ok in zip(rows, now, sources, known, strict=True):
        if not ok:
            got = _hash_file(root + path)
            if got is None:
                problems.append(FileProblem(path, Problem.MISSING))
                continue
            digest, st = got
            if digest != want or (size is not None and st.st_size != size):
                problems.append(FileProblem(path, Problem.MODIFIED))
                continue
            if source is not None and memo is not None:
                _remember(memo, source, want)
        assert st is not None  # known: stat'ed above
        if st.st_nlink > 1:
            st = _unshare(root + path)
        paths.append(path)
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
        digests.append(want)
    return (Columns(paths, sizes, mtimes, " ".join(digests)) if paths else None), problems


def _remember(memo: CacheMemo, source: str, want: str) -> None:
    got = _hash_file(source)
    if got is not None and got[0] == want:
        memo.add(got[1], want)


def _unshare(path: str) -> os.stat_result:
    """Give the env its own copy of a file hard-linked elsewhere (uv's cache, another env).

    An edit through one link would change every env sharing it; the installer is asked
    for copies, and this keeps that true whatever it fell back to.
    """
    tmp = f"{path}.envsync-unshare"
    shutil.copy2(path, tmp)
    os.replace(tmp, path)
    return os.stat(path)


class Columns(NamedTuple):
    """One distribution's recorded files, column by column, as the record keeps them."""

    paths: list[str]
    sizes: list[int]
    mtimes_ns: list[int]
    hashes: str  # the digests, space-separated: split only when a check hashes


Record = dict[str, Columns]  # canonical distribution name -> its files


def write(env: Path, record: Record) -> None:
    """Keep the verified file record in the env (before its ready marker is written).

    Columns, not rows: paths and hashes as one string a distribution, so reading the
    record of a 12,000-file env is a few large JSON values instead of 48,000 small ones.
    """
    data = {
        "format": FORMAT,
        "distributions": {
            name: {"paths": "\n".join(c.paths), "sizes": c.sizes, "mtimes-ns": c.mtimes_ns, "hashes": c.hashes}
            for name, c in sorted(record.items())
        },
    }
    atomic_write_text(env / FILES, json.dumps(data, separators=(",", ":")) + "\n")


def has_record(env: Path) -> bool:
    """The env keeps a file record of this format (its first bytes, not the whole record)."""
    try:
        with open(env / FILES, "rb") as fh:
            return fh.read(len(_HEAD)) == _HEAD
    except OSError:
        return False


_HEAD = b'{"format":%d,' % FORMAT


RecordKey = tuple[int, int, int, int]  # the record file's device, inode, size and mtime_ns


def record_key(env: Path) -> RecordKey | None:
    """The identity of the env's file record (a rewrite changes it), or None when it has none."""
    try:
        st = os.stat(env / FILES)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def load_columns(env: Path) -> Record | None:
    """The env's file record, or None when it has none (an env built before records existed)."""
    try:
        data = json.loads((env / FILES).read_bytes())
        if data.get("format") != FORMAT:
            return None
        out: Record = {}
        for name, cols in data["distributions"].items():
            paths = cols["paths"].split("\n") if cols["paths"] else []
            sizes, mtimes, hashes = cols["sizes"], cols["mtimes-ns"], cols["hashes"]
            if not (len(paths) == len(sizes) == len(mtimes) and isinstance(hashes, str)):
                return None
            out[name] = Columns(paths, sizes, mtimes, hashes)
        return out
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def load(env: Path) -> Entries | None:
    """The env's file record as entries, or None when it has none."""
    record = load_columns(env)
    if record is None:
        return None
    try:
        return {
            name: list(map(Entry._make, zip(c.paths, c.sizes, c.mtimes_ns, c.hashes.split(), strict=True)))
            for name, c in record.items()
        }
    except ValueError:  # as many digests as paths, or no record
        return None


def fast_check(env: Path, record: Record, *, split: bool = True) -> Problems:
    """Recorded files whose size or mtime changed, or that are gone: one stat a file (`split`: over the cores)."""
    parts = procfork.balanced(list(record.items()), lambda item: len(item[1].paths), procfork.cores() if split else 1)
    problems: Problems = {}
    for found in procfork.split_map(lambda part: _fast_part(env, part), parts):
        problems.update(found)
    return dict(sorted(problems.items()))  # in distribution order, however the parts fell


def _fast_part(env: Path, part: list[tuple[str, Columns]]) -> Problems:
    problems: Problems = {}
    stat = os.stat
    root = str(env) + os.sep
    for name, c in part:
        try:
            # The common case in one pass with no Python per file beyond the stat.
            now = [(s.st_size, s.st_mtime_ns) for s in map(stat, [root + p for p in c.paths])]
            if now == list(zip(c.sizes, c.mtimes_ns, strict=True)):
                continue
        except OSError:
            pass
        for path, size, mtime_ns in zip(c.paths, c.sizes, c.mtimes_ns, strict=True):
            try:
                st = stat(root + path)
            except OSError:
                problems.setdefault(name, []).append(FileProblem(path, Problem.MISSING))
                continue
            if st.st_size != size or st.st_mtime_ns != mtime_ns:
                problems.setdefault(name, []).append(FileProblem(path, Problem.MODIFIED))
    return problems


def deep_check(env: Path, entries: Entries) -> Problems:
    """Recorded files whose content no longer has the RECORD hash, or that are gone."""
    parts = procfork.balanced(list(entries.items()), lambda item: len(item[1]), procfork.cores())
    problems: Problems = {}
    for found in procfork.split_map(lambda part: _deep_part(env, part), parts):
        problems.update(found)
    return dict(sorted(problems.items()))


def _deep_part(env: Path, part: list[tuple[str, list[Entry]]]) -> Problems:
    root = str(env) + os.sep
    problems: Problems = {}
    for name, files in part:
        for e in files:
            got = _hash_file(root + e.path)
            if got is None:
                problems.setdefault(name, []).append(FileProblem(e.path, Problem.MISSING))
            elif got[0] != e.digest:
                problems.setdefault(name, []).append(FileProblem(e.path, Problem.MODIFIED))
    return problems


def count(entries: Entries | Record) -> int:
    """How many files a record holds."""
    return sum(len(files.paths) if isinstance(files, Columns) else len(files) for files in entries.values())
