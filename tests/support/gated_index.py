"""A local index's files behind a server that can hold a wheel download, then serve or refuse it."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Any


class GatedIndex:
    """An index's files behind a server that can hold a wheel download, then serve or refuse it."""

    def __init__(self, root: Path, *, armed: bool = False, slow: float = 0.0) -> None:
        # armed: hold each wheel download until `release` is set; fail: then answer 404;
        # slow: seconds each held file still takes after the release (a wider window to kill in).
        self.armed = armed
        self.fail = False
        self.requested = threading.Event()
        self.release = threading.Event()
        gate = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, directory=str(root), **k)

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook
                if gate.armed and self.path.split("#")[0].endswith(".whl"):
                    gate.requested.set()
                    gate.release.wait(60)
                    time.sleep(slow)
                    if gate.fail:
                        self.send_error(404)
                        return
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
