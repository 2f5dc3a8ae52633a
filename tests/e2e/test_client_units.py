"""The example client's own rules, under Node: the connection string, what counts as verified,
how a diff reads, and which addresses Local Network Access guards."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.browser]

FP = "sha256:" + "a" * 64


@pytest.fixture(scope="module")
def units(run_node: Any) -> dict[str, Any]:
    report = run_node("client_units.mjs")
    assert report["_returncode"] == 0, report
    return report


def test_connection_string_carries_the_token_in_its_fragment(units):
    assert units["connection"] == {"gateway": "http://127.0.0.1:8888", "token": "abc"}
    assert units["connection_with_field"] == {"gateway": "http://127.0.0.1:8888", "token": "xyz"}
    assert units["connection_token_wins"]["token"] == "abc"
    assert units["connection_bad_scheme"]["error"].startswith("the gateway URL must be http(s)://")
    # A refusal quotes what was pasted without its token.
    assert "secret" not in units["connection_not_url"]["error"]
    assert units["connection_not_url"]["error"].startswith("not a gateway URL or connection string")


def test_manifest_is_taken_from_a_whole_notebook_too(units):
    assert units["manifest_from_notebook"] == FP
    assert units["manifest_array"] == {
        "error": "the notebook manifest must be the JSON object in metadata.envsync"
    }


def test_verified_only_when_the_file_check_was_clean(units):
    assert units["verified_clean"]["state"] == "verified"
    assert units["verified_clean"]["text"].startswith("verified: ")
    assert units["verified_modified"] == {
        "state": "modified",
        "text": "NOT verified: 2 file(s) differ from the lock: idna/core.py (modified), gone (missing)",
    }
    # A matching fingerprint alone proves the lock, not the files.
    assert units["verified_none_matching"] == {
        "state": "unverified",
        "text": "lock matches, files not verified",
    }
    assert units["verified_none_other"] == {"state": "unverified", "text": "files not verified"}


def test_diff_reads_like_envsync_diff(units):
    assert units["diff_same"] == ["same lock"]
    assert units["diff_lines"] == [
        "~ idna 3.10 → 3.11 (upgraded)",
        "+ beta 1.0",
        "- gamma 2.0",
        "~ numpy (hashes-changed)",
        "requires-python: ==3.11.* → ==3.12.*",
        "1 file hash(es) changed",
    ]


def test_address_spaces(units):
    assert units["spaces"] == {
        "127.0.0.1": "loopback",
        "localhost": "loopback",
        "[::1]": "loopback",
        "192.168.1.5": "private",
        "10.0.0.1": "private",
        "172.20.0.1": "private",
        "172.32.0.1": "public",
        "editor.example": "public",
        "printer.local": "private",
    }
