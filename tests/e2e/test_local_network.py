"""A web editor on a PUBLIC origin reaching the gateway on 127.0.0.1: Chromium's Local Network
Access asks the user first; the page tells that refusal apart from a CORS refusal.

Chromium counts the page's server as public through `--ip-address-space-overrides`; the user's
"Allow" is a CDP `Browser.grantPermissions` of `loopbackNetwork` for the page's origin.
"""

from __future__ import annotations

import http.client
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = [pytest.mark.network, pytest.mark.browser]

LOCAL_NETWORK_MESSAGE = (
    "This site needs permission to access apps on your device (local network access). "
    "Allow it in the browser's prompt or site settings, then retry."
)
BLOCKED_BY_BROWSER = "Permission was denied for this request to access the `loopback` address space"


def pasted(launched: Any) -> str:
    """The connection string in the form `envsync launch` prints it: the token in the fragment."""
    return f"{launched.url}/#token={launched.token}"


def test_public_page_with_the_permission_runs_the_locked_numpy(
    launched, client_site, quickstart_lock, open_client, client_url, artifacts
):
    url = client_url(client_site.origin, connection=pasted(launched))

    report = open_client(
        url, "--public", "--grant-local-network", screenshot=artifacts / "browser-client-public-granted.png"
    )

    assert report["state"] == "done", report
    assert report["result"] == quickstart_lock.numpy_version, report
    assert report["kernel"] == quickstart_lock.kernel_name
    assert not any(BLOCKED_BY_BROWSER in line for line in report["console"]), report["console"]
    assert launched.token not in report["location"]
    assert launched.wait_no_kernels() == []


def test_public_page_without_the_permission_says_so_and_starts_nothing(
    launched, client_site, open_client, client_url, artifacts
):
    before = launched.kernels()
    url = client_url(client_site.origin, connection=pasted(launched))

    report = open_client(url, "--public", screenshot=artifacts / "browser-client-public-denied.png")

    assert report["state"] == "error", report
    assert report["status"].startswith("error: " + LOCAL_NETWORK_MESSAGE), report["status"]
    # The origin IS the allowed one: the --allow-origin hint would send the user the wrong way.
    assert "--allow-origin" not in report["status"] and "CORS" not in report["status"], report["status"]
    assert any(BLOCKED_BY_BROWSER in line for line in report["console"]), report["console"]
    assert report["kernel"] == "" and report["result"] == ""
    assert launched.kernels() == before == []


def test_pasted_connection_string_and_separate_token_both_work(
    launched, client_site, quickstart_lock, open_client, client_url
):
    separate = client_url(
        client_site.origin,
        connection=launched.url,
        token=launched.token,
        expected=quickstart_lock.fingerprint,
    )

    report = open_client(separate)

    assert report["state"] == "done", report
    assert report["match"] == "match"
    assert launched.token not in report["location"]


def preflight(gateway_url: str, origin: str) -> http.client.HTTPResponse:
    """A browser's CORS preflight for a POST from `origin`, as Private Network Access sends it."""
    parts = urlsplit(gateway_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    conn.request(
        "OPTIONS",
        "/api/envsync/lock",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_private_network_preflight_is_answered_for_the_allowed_origin_only(
    launched, client_site, foreign_site
):
    allowed = preflight(launched.url, client_site.origin)
    other = preflight(launched.url, foreign_site.origin)

    assert allowed.status in (200, 204), (allowed.status, allowed.getheaders())
    assert allowed.getheader("Access-Control-Allow-Private-Network") == "true", allowed.getheaders()
    assert allowed.getheader("Access-Control-Allow-Origin") == client_site.origin
    assert other.getheader("Access-Control-Allow-Private-Network") is None, other.getheaders()
    assert other.getheader("Access-Control-Allow-Origin") is None, other.getheaders()


def test_launch_prints_the_connection_string_the_page_takes(
    launched, client_site, quickstart_lock, open_client, client_url
):
    connection = launched.connection
    parts = urlsplit(connection)
    assert f"{parts.scheme}://{parts.netloc}" == launched.url, connection
    # The token in the fragment, which no browser sends to any server; never in a query.
    assert f"token={launched.token}" in parts.fragment and parts.query == "", "token not in the fragment"

    report = open_client(client_url(client_site.origin, connection=connection))

    assert report["state"] == "done", report
    assert report["result"] == quickstart_lock.numpy_version
    # The page read the env's state from /api/envsync before running.
    assert report["env_state_state"] == "ready", report
    assert report["env_python"].startswith("3.11."), report
    assert f"numpy {quickstart_lock.numpy_version}" in report["env_packages"], report


def test_error_answers_reach_the_allowed_origin_only(launched, client_site, foreign_site):
    """An error answer (here: no such kernel) must reach the page as itself, not as a CORS failure."""
    answers = {
        origin: requests.get(
            f"{launched.url}/api/kernels/{uuid.uuid4()}",
            headers={"Authorization": f"token {launched.token}", "Origin": origin},
            timeout=30,
        )
        for origin in (client_site.origin, foreign_site.origin)
    }

    allowed, other = answers[client_site.origin], answers[foreign_site.origin]
    assert allowed.status_code == other.status_code == 404, (allowed.text, other.text)
    assert allowed.json()["reason"] == "Not Found"
    assert allowed.headers.get("Access-Control-Allow-Origin") == client_site.origin, allowed.headers
    assert "Access-Control-Allow-Origin" not in other.headers, other.headers
