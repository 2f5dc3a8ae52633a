"""Registry of running gateways, for `envsync status` and `envsync stop`.

One JSON file per gateway, `<runtime_dir>/gateway-<port>.json`, written atomically with
mode 0600 because it holds the token (so `status` can ask the gateway for its kernels).
An entry whose PID is gone, or now belongs to another program, is dropped when read: the
PID's command line must still be our gateway child serving that port, and its start time
the one recorded (so a PID reused by a later process is never signalled).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envsync import proc
from envsync.errors import UsageError
from envsync.fsutil import atomic_write_text
from envsync.gateway import process
from envsync.gateway.spec import SPEC_OPTION, GatewaySpec
from envsync.settings import Settings

RECORD_VERSION = 1
_PREFIX = "gateway-"


@dataclass(frozen=True)
class GatewayRecord:
    """What `envsync status` shows about one running process."""

    pid: int
    port: int
    url: str
    kernel_name: str
    notebook: str
    project: str
    fingerprint: str
    started_at: str  # ISO 8601, UTC
    token: str = field(repr=False)
    log_path: str | None = None
    pid_started: float | None = None  # the process's start time; None in older records

    def as_running(self) -> process.RunningGateway:
        """A handle `process.kernels` and `process.stop` accept (no process object)."""
        return process.RunningGateway(
            pid=self.pid,
            port=self.port,
            url=self.url,
            token=self.token,
            kernel_name=self.kernel_name,
            log_path=Path(self.log_path) if self.log_path else None,
            started=self.pid_started,
        )


def record(
    settings: Settings,
    gw: process.RunningGateway,
    *,
    notebook: Path,
    project: str,
    fingerprint: str,
) -> GatewayRecord:
    """Remember a gateway this process started."""
    rec = GatewayRecord(
        pid=gw.pid,
        port=gw.port,
        url=gw.url,
        kernel_name=gw.kernel_name,
        notebook=str(Path(notebook).resolve()),
        project=project,
        fingerprint=fingerprint,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        token=gw.token,
        log_path=str(gw.log_path) if gw.log_path else None,
        pid_started=gw.started,
    )
    directory = _runtime_dir(settings)
    data = {"version": RECORD_VERSION, **asdict(rec)}
    atomic_write_text(_path(directory, rec.port), json.dumps(data, indent=2) + "\n", mode=0o600)
    return rec


def serving(settings: Settings, port: int, fingerprint: str) -> None:
    """Note that the gateway on `port` now serves the lock `fingerprint` (an editor's lock update)."""
    path = _path(settings.runtime_dir, port)
    rec = _read(path)
    if rec is None:
        return
    data = {"version": RECORD_VERSION, **asdict(replace(rec, fingerprint=fingerprint))}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", mode=0o600)


def running(settings: Settings) -> list[GatewayRecord]:
    """Gateways that are still running, by port; stale entries are removed."""
    directory = settings.runtime_dir
    if not directory.is_dir():
        return []
    found: list[GatewayRecord] = []
    for path in sorted(directory.glob(f"{_PREFIX}*.json")):
        rec = _read(path)
        if rec is None or not _is_our_gateway(rec):
            _unlink(path)
            continue
        found.append(rec)
    return sorted(found, key=lambda r: r.port)


def forget(settings: Settings, port: int) -> None:
    """Drop the entry for the gateway on `port` (it has stopped)."""
    _unlink(_path(settings.runtime_dir, port))


def stop(
    settings: Settings,
    *,
    port: int | None = None,
    all: bool = False,  # noqa: A002 - mirrors `envsync stop --all`
    timeout: float = 15.0,
) -> list[GatewayRecord]:
    """Stop the gateway on `port`, every gateway (`all`), or the only one; return those stopped."""
    live = running(settings)
    if port is not None:
        targets = [r for r in live if r.port == port]
        if not targets:
            raise UsageError(f"no envsync gateway is running on port {port}")
    elif all or len(live) <= 1:
        targets = live
    else:
        ports = ", ".join(str(r.port) for r in live)
        raise UsageError(f"{len(live)} gateways are running (ports {ports}): name a port or use all")
    for rec in targets:
        process.stop_pid(rec.pid, timeout=timeout)
        forget(settings, rec.port)
    return targets


# --- internals ---------------------------------------------------------------------------


def _runtime_dir(settings: Settings) -> Path:
    directory = settings.runtime_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def _path(directory: Path, port: int) -> Path:
    return directory / f"{_PREFIX}{int(port)}.json"


def _read(path: Path) -> GatewayRecord | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            return None
        data.pop("version")
        return GatewayRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def _is_our_gateway(rec: GatewayRecord) -> bool:
    """The PID is alive, started when recorded, and runs our gateway child on that port."""
    if not proc.pid_alive(rec.pid):
        return False
    # Linux derives a start time from the boot time, which each reader may see a second
    # apart; a reused PID also fails the command-line check below.
    if rec.pid_started is not None:
        now = proc.start_time(rec.pid)
        if now is None or abs(now - rec.pid_started) > 2.0:
            return False
    argv = proc.cmdline(rec.pid)
    if argv is None or process.CHILD_MODULE not in argv:
        return False
    try:
        spec = GatewaySpec.from_json(argv[argv.index(SPEC_OPTION) + 1])
    except (ValueError, IndexError, UsageError):
        return False
    return spec.serve.port == rec.port


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
