"""The envsync CLI run in-process, as a test sees it: exit code, stdout and stderr."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from envsync.cli import main


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("ERROR")]

    @property
    def notes(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("note: ")]


def envsync(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    """`envsync ARGV...` through `main`, with what it printed."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)
