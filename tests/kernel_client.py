"""Kept for suites not yet switched: the client now lives in tests/support/gateway_client.py."""

from __future__ import annotations

from tests.support.gateway_client import execute

__all__ = ["execute"]
