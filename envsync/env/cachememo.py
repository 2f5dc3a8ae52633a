"""Files of uv's cache already hashed against their wheel's RECORD, so that a build does not hash them again.

Every build hashes each installed file against its wheel's `RECORD` (`files.verify`). uv
copies those files from its cache, where each wheel is unpacked once into an archive
folder; builds of the same packages copy the same cached files again and again. This
module remembers the cached files that were hashed and matched, by device, inode, size,
mtime and ctime: a write, a truncation, a `chmod` or a new hard link changes the ctime,
which no program can set back. A later build then checks each copied file against its
cached source with two `stat` calls instead of reading and hashing it, and hashes it
as before when anything about the source differs (or the source cannot be found).

The source of a distribution is uv's pointer for that wheel, `wheels-v*/<index>/<name>/
<version>-<tags>` (a link to `archive-v0/<id>`), taken only when exactly one pointer of the
distribution's version leads to an archive whose `WHEEL` file is the installed one. uv's
cache layout is uv's own: when it changes, no source is found and every file is hashed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from envsync.fsutil import stat_each
from envsync.rules import canonical_name

FILE = "verified-uv-cache-v2.txt"
_MAX_LINES = 400_000  # then the memo starts again (a few builds' worth of hashing)


def _key(st: os.stat_result) -> str:
    return f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"


class CacheMemo:
    """(device, inode, size, mtime, ctime) of a cached file -> the RECORD hash it was found to have."""

    def __init__(self, path: Path, cache_dir: Path | None) -> None:
        self.path = path
        self.cache_dir = cache_dir
        self._new: list[str] = []
        self._bases: dict[str, list[str]] | None = None
        try:
            words = path.read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError):
            words = []
        if len(words) > 2 * _MAX_LINES:
            words = []
            path.unlink(missing_ok=True)
        # Lines of "dev-ino-size-mtime-ctime digest". A torn line can only pair a key with a
        # word that is no digest (or a digest with no stat's key): it never matches a file.
        self._known = dict(zip(words[0::2], words[1::2], strict=False))

    def add(self, st: os.stat_result, digest: str) -> None:
        key = _key(st)
        if self._known.get(key) != digest:
            self._known[key] = digest
            self._new.append(f"{key} {digest}\n")

    def take_new(self) -> list[str]:
        """The lines added since the last save, taken out (a forked part hands them to its parent)."""
        new, self._new = self._new, []
        return new

    def extend(self, lines: list[str]) -> None:
        """Add lines another process's copy of this memo added."""
        for line in lines:
            key, _, digest = line.rstrip("\n").partition(" ")
            self._known[key] = digest
        self._new.extend(lines)

    def prepare(self) -> None:
        """List uv's wheel folders now, so that parts of one build share the listing."""
        self._wheel_folders()

    def save(self) -> None:
        """Append what this build hashed (one write: lines of concurrent builds do not mix)."""
        if not self._new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, "".join(self._new).encode("ascii"))
        finally:
            os.close(fd)
        self._new.clear()

    def source(self, dist_info: Path) -> Path | None:
        """The folder of uv's cache whose files uv copied into the env for this distribution, or None."""
        name, _, version = dist_info.name.removesuffix(".dist-info").rpartition("-")
        folders = self._wheel_folders().get(canonical_name(name))
        if not folders:
            return None
        try:
            wheel = (dist_info / "WHEEL").read_bytes()
        except OSError:
            return None
        found = set()
        for folder in folders:
            try:
                entries = list(os.scandir(folder))
            except OSError:  # uv pruned it since the listing: no source, every file is hashed
                continue
            for entry in entries:
                if not entry.name.startswith(f"{version}-") or not entry.is_symlink():
                    continue
                if entry.name.endswith((".http", ".lock", ".msgpack", ".rev")):
                    continue
                archive = Path(entry.path).resolve()
                try:
                    if (archive / dist_info.name / "WHEEL").read_bytes() == wheel:
                        found.add(archive)
                except OSError:
                    continue
        return found.pop() if len(found) == 1 else None

    def copies(
        self, env: Path, info: Path, rows: Sequence[tuple[str, str, int | None]], now: Sequence[os.stat_result | None]
    ) -> tuple[list[str | None], list[bool]]:
        """For each RECORD row (path in the env, hash, size) of the distribution `info`, whose
        env file has the stat `now`: the cached file uv copied it from, and whether the env's
        file is a copy of a cached file hashed before that still has the stat it had then."""
        archive = self.source(info)
        if archive is None:
            return [None] * len(rows), [False] * len(rows)
        site = os.path.relpath(info.parent, env).replace(os.sep, "/") + "/"
        cut, prefix = len(site), f"{archive}/"
        sources = [prefix + path[cut:] if path.startswith(site) else None for path, _want, _size in rows]
        known = self._known
        return sources, [
            st is not None
            and src is not None
            and st.st_size == src.st_size
            and (size is None or size == st.st_size)
            and known.get(_key(src)) == want
            for (_path, want, size), st, src in zip(rows, now, stat_each(sources), strict=True)
        ]

    def _wheel_folders(self) -> dict[str, list[str]]:
        """Package name -> its folders of wheel pointers (`wheels-v*/<index>/<name>`), listed once a build."""
        if self._bases is None:
            self._bases = {}
            for index in self._index_folders():
                try:
                    names = os.listdir(index)
                except OSError:
                    continue
                for name in names:
                    self._bases.setdefault(name, []).append(os.path.join(index, name))
        return self._bases

    def _index_folders(self) -> list[str]:
        if self.cache_dir is None:
            return []
        out = []
        for wheels in self.cache_dir.glob("wheels-v*"):
            for entry in _subfolders(str(wheels)):
                # `index/<hash>/<name>` for a named index, `<kind>/<name>` (pypi, url, path) otherwise.
                out.extend(_subfolders(entry) if os.path.basename(entry) == "index" else [entry])
        return out


def _subfolders(folder: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
