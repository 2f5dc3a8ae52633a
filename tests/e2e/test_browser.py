"""Headless Chromium runs the example browser client (examples/browser-client) against the
gateway of `envsync launch`, from the allowed origin and from another one."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

pytestmark = [pytest.mark.network, pytest.mark.browser]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def page_url(origin: str, *, gateway: str, token: str, expected: str, in_fragment: bool = False) -> str:
    params = urlencode({"gateway": gateway, "token": token, "expected": expected})
    # The fragment form never reaches the static server (or its logs); the page reads both.
    return f"{origin}/index.html#{params}" if in_fragment else f"{origin}/index.html?{params}"


def open_page(
    run_node: Any, url: str, screenshot: Path | None = None, timeout_ms: int = 90000
) -> dict[str, Any]:
    args = ["--timeout-ms", str(timeout_ms)]
    if screenshot is not None:
        screenshot.unlink(missing_ok=True)
        args += ["--screenshot", str(screenshot)]
    report = run_node(
        "browser_check.mjs", *args, env={"ENVSYNC_PAGE_URL": url}, timeout=timeout_ms / 1000 + 60
    )
    assert report["_returncode"] == 0, f"the page reached no final state: {report}"
    return report


def assert_png(path: Path) -> None:
    assert path.is_file(), f"no screenshot at {path}"
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE) + 100 and data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"


def test_page_on_allowed_origin_runs_the_locked_numpy(
    browser, launched, client_site, quickstart_lock, run_node, artifacts
):
    assert launched.info["fingerprint"] == quickstart_lock.fingerprint
    shot = artifacts / "browser-client.png"
    url = page_url(
        client_site.origin, gateway=launched.url, token=launched.token, expected=quickstart_lock.fingerprint
    )

    report = open_page(run_node, url, shot)

    assert report["state"] == "done", report
    assert report["kernel"] == quickstart_lock.kernel_name
    assert report["fingerprint"] == quickstart_lock.fingerprint
    assert report["match"] == "match"
    assert report["result"] == quickstart_lock.numpy_version, report
    assert report["page_errors"] == [], report
    # The page took the token out of its address after reading it.
    assert launched.token not in report["location"]
    assert_png(shot)
    # The page shut its kernel down when it was done.
    assert launched.wait_no_kernels() == []


def test_page_on_other_origin_is_refused_by_cors(
    browser, launched, client_site, foreign_site, quickstart_lock, run_node, artifacts
):
    assert foreign_site.origin != client_site.origin  # client_site's origin is the allowed one
    before = launched.kernels()
    url = page_url(
        foreign_site.origin,
        gateway=launched.url,
        token=launched.token,
        expected=quickstart_lock.fingerprint,
        in_fragment=True,
    )

    report = open_page(run_node, url, artifacts / "browser-client-cors-refused.png")

    assert report["state"] == "error", report
    assert report["status"].startswith("error: "), report
    assert "CORS" in report["status"], report
    assert report["result"] == "" and report["kernel"] == ""
    # The browser said why, in its console: no CORS header for this origin.
    assert any("CORS policy" in line for line in report["console"]), report["console"]
    after = launched.kernels()
    assert after == before == [], f"a kernel was started from a refused origin: {after}"


def test_fingerprint_mismatch_warns_and_runs_nothing(
    browser, launched, client_site, quickstart_lock, run_node, artifacts
):
    wrong = "sha256:" + "0" * 64
    assert wrong != quickstart_lock.fingerprint
    before = launched.kernels()
    url = page_url(
        client_site.origin, gateway=launched.url, token=launched.token, expected=wrong, in_fragment=True
    )

    report = open_page(run_node, url, artifacts / "browser-client-mismatch.png")

    assert report["state"] == "mismatch", report
    assert report["status"].startswith("mismatch:"), report
    assert report["match"] == "mismatch"
    assert report["fingerprint"] == quickstart_lock.fingerprint
    assert wrong in report["warning"] and quickstart_lock.fingerprint in report["warning"], report
    assert "Nothing was run" in report["warning"]
    assert report["result"] == ""
    after = launched.kernels()
    assert after == before == [], f"a kernel was started despite the mismatch: {after}"
