"""Package indexes for the test hosts of tests/support/hosts.py, and wheels to fill them.

A host's namespace reaches this machine only at its gateway address (`Host.gateway`,
198.18.X.1 on the run's bridge), the same address for every host of one `ssh_hosts` run.
So an index for the hosts is tests/wheelhouse.py's LocalIndex started on that address, never
on 0.0.0.0 (which would serve every other network of the machine too). pip or uv on a host
installs from `http://198.18.X.1:PORT/simple` (`LocalIndex.url`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import parse_wheel_filename

from tests.wheelhouse import LocalIndex

CACHE = Path.home() / ".cache" / "envsync-tests" / "wheelhouse"
# CPython 3.11 on linux x86_64 with glibc 2.36 (Debian 12). pip widens manylinux2014 to 2010
# and 1 by itself, but a `manylinux_2_N` tag only to itself, so each N is named.
TARGET = ("--implementation", "cp", "--python-version", "3.11", "--abi", "cp311")
PLATFORMS = (
    *(f"manylinux_2_{n}_x86_64" for n in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "linux_x86_64",
)
COMPLETE = ".complete"


def download_wheels(requirements: Sequence[str], *, cache: Path = CACHE, timeout: float = 600.0) -> Path:
    """A folder with wheels for `requirements` and their dependencies, for CPython 3.11 on x86_64.

    Downloaded once with `pip download` into cache/<hash of the requirements and the target>;
    a later call finds that folder complete and downloads nothing. Raises RuntimeError with
    pip's last lines when the download fails.
    """
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    key = json.dumps([sorted(requirements), TARGET, PLATFORMS]).encode()
    folder = cache / hashlib.sha256(key).hexdigest()[:16]
    if (folder / COMPLETE).is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{folder.name}.partial-", dir=cache))
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", *TARGET, *platforms, "--dest", str(partial), *requirements]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        shutil.rmtree(partial)
        raise RuntimeError(f"pip download {' '.join(requirements)} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        shutil.rmtree(partial)
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"pip download {' '.join(requirements)} exited {done.returncode}: {tail}")
    (partial / COMPLETE).write_text("\n".join(sorted(requirements)) + "\n")
    try:
        partial.rename(folder)
    except OSError:  # another run finished the same folder first
        shutil.rmtree(partial)
    if not (folder / COMPLETE).is_file():
        raise RuntimeError(f"{folder} is there but incomplete: remove it and run again")
    return folder


def serve_wheels(wheels: Path, root: Path, address: str) -> LocalIndex:
    """Every wheel in `wheels` as a PEP 503 index served from `root` on `address`; started.

    `address` is a host's gateway address; the caller stops the index (`LocalIndex.stop`).
    """
    index = LocalIndex(root)
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(wheels.glob("*.whl")):
        served = files / wheel.name
        try:
            os.link(wheel, served)
        except OSError:  # another file system than the cache's
            shutil.copy2(wheel, served)
        index.files.setdefault(parse_wheel_filename(wheel.name)[0], []).append(served)
    if not index.files:
        raise ValueError(f"no wheels in {wheels}")
    return index.start(host=address)
