"""The gateway child's rules as plain functions: token strength and channels, the capped and
collapsing log, the kernel's working folder, and what a kernelspec shows to clients."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import pytest

from envsync.errors import UsageError
from envsync.gateway.spec import GatewaySpec, ServeOptions, check_token


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("x", "too short"),
        ("a" * 31, "too short"),
        ("a" * 40, "too easy"),
        ("abcdefghijabcdefghijabcdefghijabcd", "too easy"),  # letters of one kind only
        ("0123456789" * 4, "too easy"),
        ("with space" * 4, "only letters"),
    ],
)
def test_a_weak_or_unsafe_token_is_refused(token: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        check_token(token)


def test_a_random_token_passes() -> None:
    for _ in range(200):
        check_token(secrets.token_urlsafe(24))


def test_limits_travel_in_the_spec_and_are_checked(tmp_path: Path) -> None:
    spec = GatewaySpec(
        "envsync-x",
        tmp_path,
        ServeOptions(max_kernels=2),
        log_max_bytes=65536,
        python="/p",
        fingerprint="sha256:f",
    )
    assert GatewaySpec.from_json(spec.to_json()) == spec
    with pytest.raises(UsageError, match="max kernels 0 is out of range"):
        ServeOptions(max_kernels=0).validate()


def test_the_token_counts_only_in_the_header_or_on_the_channels_route() -> None:
    from tornado.httputil import HTTPHeaders

    from envsync.gateway.guard import TokenCheck

    token = secrets.token_urlsafe(32)
    check = TokenCheck(token)
    kid = "0b6f0d4e-9d8c-4c59-8a3a-2f0d6c1c9b11"
    assert check.allows("GET", "/api", HTTPHeaders({"Authorization": f"token {token}"}))
    assert not check.allows("GET", "/api", HTTPHeaders({"Authorization": f"Bearer {token}"}))
    assert not check.allows("GET", f"/api?token={token}", HTTPHeaders())
    assert check.allows("GET", f"/api/kernels/{kid}/channels?token={token}", HTTPHeaders())
    assert not check.allows("GET", f"/api/kernels/{kid}/channels?token={token}&token=x", HTTPHeaders())
    assert not check.allows("GET", "/api", HTTPHeaders({"Authorization": f"token {token[:-1]}"}))
    preflight = HTTPHeaders({"Origin": "https://e.example", "Access-Control-Request-Method": "POST"})
    assert check.allows("OPTIONS", "/api/kernels", preflight)
    preflight["Content-Length"] = "5"
    assert not check.allows("OPTIONS", "/api/kernels", preflight)  # a preflight carries no body
    assert check.allows("GET", "/api/swagger.json", HTTPHeaders())
    assert not check.allows("POST", "/api/swagger.json", HTTPHeaders())


def test_alike_log_lines_collapse_into_a_count_and_a_flood_is_rate_limited() -> None:
    from envsync.gateway.logs import RepeatFilter

    now = [0.0]
    repeat = RepeatFilter(window=10.0, per_second=5, clock=lambda: now[0])

    def passes(msg: str, *args: object) -> logging.LogRecord | None:
        record = logging.LogRecord("tornado.access", logging.WARNING, __file__, 1, msg, args, None)
        return record if repeat.filter(record) else None

    assert passes("401 GET /api (%s) %.2fms", "127.0.0.1", 0.5) is not None
    assert all(passes("401 GET /api (%s) %.2fms", "127.0.0.1", i / 7) is None for i in range(100))
    now[0] = 11.0
    later = passes("401 GET /api (127.0.0.1) 1.00ms")
    assert later is not None and "100 more like this" in later.getMessage()
    distinct = [passes(f"401 GET /{name}") for name in ("a", "b", "c", "d", "e", "f", "g")]
    assert sum(r is not None for r in distinct) == 4  # 5 a second, one of them was `later`
    now[0] = 12.5
    noted = passes("401 GET /h")
    assert noted is not None and "3 other lines dropped" in noted.getMessage()


def test_the_log_file_never_grows_past_its_cap(tmp_path: Path) -> None:
    from envsync.gateway.logs import CappedLog

    path = tmp_path / "gw.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # as the parent opens it
    try:
        log = CappedLog(fd, 16384)
        for i in range(5000):
            log.write(f"line {i} {'x' * 60}\n")
            assert path.stat().st_size <= 16384
    finally:
        os.close(fd)
    text = path.read_text()
    assert "older lines were dropped" in text and text.endswith(f"line 4999 {'x' * 60}\n")


def test_the_kernel_folder_is_resolved_and_stays_inside(tmp_path: Path) -> None:
    from envsync.gateway.policy import kernel_cwd

    root = tmp_path / "nb"
    (root / "deep" / "a").mkdir(parents=True)
    (root / "link").symlink_to(root / "deep" / "a")
    (root / "out").symlink_to(tmp_path)
    assert kernel_cwd(root, "link/../../outside.ipynb") == root.resolve()  # jupyter_server: tmp_path
    assert kernel_cwd(root, "out/x.ipynb") == root.resolve()
    assert kernel_cwd(root, "../../etc/passwd") == root.resolve()
    assert kernel_cwd(root, "link/x.ipynb") == (root / "deep" / "a").resolve()
    assert kernel_cwd(root, None) == root.resolve()


def test_clients_see_a_kernelspec_without_argv_env_or_paths() -> None:
    from envsync.gateway.handlers import public_spec_model

    model = {
        "name": "envsync-x",
        "spec": {
            "argv": ["/home/me/envs/abc/bin/python", "-m", "ipykernel_launcher"],
            "env": {"SECRET": "1"},
            "display_name": "x (Python 3.11, envsync)",
            "language": "python",
            "metadata": {
                "envsync": {"fingerprint": "sha256:f", "project": "x", "notebook": "/home/me/nb.ipynb"}
            },
        },
        "resources": {"logo-64x64": "/kernelspecs/envsync-x/logo-64x64.png"},
    }
    public = public_spec_model(model)
    assert "/home/me" not in repr(public)
    assert public["spec"]["argv"] == [] and public["spec"]["env"] == {}
    assert public["spec"]["metadata"] == {"envsync": {"fingerprint": "sha256:f", "project": "x"}}
    assert public["resources"] == model["resources"]
