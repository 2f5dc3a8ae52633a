"""Tiny real wheels and a PEP 503 index on 127.0.0.1, so tests resolve and install for real."""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import threading
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    files: dict[str, str] | None = None,
    tag: str = "py3-none-any",
) -> Path:
    """Write a minimal valid wheel whose module reports `__version__`."""
    dist = name.replace("-", "_")
    module = dist.lower()
    files = files if files is not None else {f"{module}/__init__.py": f"__version__ = {version!r}\n"}
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    contents = dict(files)
    contents[f"{info}/METADATA"] = "\n".join(meta) + "\n"
    contents[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: envsync-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    )
    record = [f"{path},{_record_hash(text.encode())},{len(text.encode())}" for path, text in contents.items()]
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arc, text in contents.items():
            # A fixed timestamp makes the same wheel byte-identical, so its hash is stable.
            zi = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, text)
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@dataclass
class LocalIndex:
    """A PEP 503 simple index served from a folder on 127.0.0.1 (or the address `start` is given)."""

    root: Path
    url: str = ""
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    files: dict[str, list[Path]] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)  # the path of each GET, in order
    # `Cache-Control: max-age=N` on every response (PyPI sends 600): None sends none, and
    # uv then takes pages as fresh for a while by their Last-Modified.
    max_age: int | None = None

    def add(self, name: str, version: str, **kwargs: object) -> Path:
        wheel = build_wheel(self.root / "files", name, version, **kwargs)  # type: ignore[arg-type]
        self.files.setdefault(canonicalize_name(name), []).append(wheel)
        self._write_pages()
        return wheel

    def replace(self, wheel: Path, data: bytes) -> None:
        """Swap a published file's bytes (a re-upload or a compromised mirror)."""
        wheel.write_bytes(data)
        self._write_pages()

    def _write_pages(self) -> None:
        simple = self.root / "simple"
        simple.mkdir(parents=True, exist_ok=True)
        links = []
        for project, wheels in sorted(self.files.items()):
            links.append(f'<a href="{project}/">{project}</a>')
            page = simple / project
            page.mkdir(exist_ok=True)
            anchors = "\n".join(
                f'<a href="../../files/{html.escape(w.name)}#sha256={sha256_file(w)}">'
                f"{html.escape(w.name)}</a>"
                for w in wheels
            )
            (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{anchors}\n</body></html>\n")
        (simple / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        )

    def start(self, host: str = "127.0.0.1") -> LocalIndex:
        """Serve on `host` (an address of this machine) and a free port; `url` names both."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_pages()
        root = str(self.root)
        served, max_age = self.served, self.max_age

        class Handler(_QuietHandler):
            def __init__(self, *a: object, **k: object) -> None:
                super().__init__(*a, directory=root, **k)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                served.append(self.path)
                super().do_GET()

            def end_headers(self) -> None:
                if max_age is not None:
                    self.send_header("Cache-Control", f"max-age={max_age}")
                super().end_headers()

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        port = self._server.server_address[1]
        self.url = f"http://{host}:{port}/simple"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def standard_index(root: Path) -> LocalIndex:
    """An index with a fake kernel package and a small dependency graph used across tests."""
    index = LocalIndex(root)
    # envsync always locks the kernel's packages; a stand-in keeps these tests offline.
    index.add("ipykernel", "6.0.0", requires=["comm>=0.1"])
    index.add("comm", "0.1.0")
    index.add("comm", "0.2.0")
    index.add("alpha", "1.0.0")
    index.add("alpha", "1.1.0")
    index.add("alpha", "2.0.0")
    index.add("beta", "1.0.0", requires=["alpha>=1.0"])
    index.add("gamma", "0.5.0", requires=['alpha<2 ; sys_platform == "win32"'])
    index.add("winonly", "1.0.0")
    return index.start()
