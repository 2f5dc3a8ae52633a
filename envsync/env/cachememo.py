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
import re
from pathlib import Path

FILE = "verified-uv-cache.txt"
_MAX_LINES = 400_000  # then the memo starts again (a few builds' worth of hashing)
_Key = tuple[int, int, int, int, int]


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CacheMemo:
    """(device, inode, size, mtime, ctime) of a cached file -> the RECORD hash it was found to have."""

    def __init__(self, path: Path, cache_dir: Path | None) -> None:
        self.path = path
        self.cache_dir = cache_dir
        self._known: dict[_Key, str] = {}
        self._new: list[str] = []
        try:
            lines = path.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        if len(lines) > _MAX_LINES:
            lines = []
            path.unlink(missing_ok=True)
        for line in lines:
            parts = line.split()
            if len(parts) == 6 and all(p.isdigit() for p in parts[:5]):
                self._known[(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]))] = parts[5]

    def known(self, st: os.stat_result, digest: str) -> bool:
        """The cached file with this stat was hashed before and had `digest`."""
        return self._known.get(_key(st)) == digest

    def add(self, st: os.stat_result, digest: str) -> None:
        key = _key(st)
        if self._known.get(key) != digest:
            self._known[key] = digest
            self._new.append(" ".join(map(str, key)) + f" {digest}\n")

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
        if self.cache_dir is None:
            return None
        name, _, version = dist_info.name.removesuffix(".dist-info").rpartition("-")
        try:
            wheel = (dist_info / "WHEEL").read_bytes()
        except OSError:
            return None
        canonical = re.sub(r"[-_.]+", "-", name).lower()
        found = set()
        for pattern in (f"wheels-v*/*/{canonical}/{version}-*", f"wheels-v*/index/*/{canonical}/{version}-*"):
            for link in self.cache_dir.glob(pattern):
                if link.suffix in (".http", ".lock", ".msgpack", ".rev") or not link.is_symlink():
                    continue
                archive = link.resolve()
                try:
                    if (archive / dist_info.name / "WHEEL").read_bytes() == wheel:
                        found.add(archive)
                except OSError:
                    continue
        return found.pop() if len(found) == 1 else None
