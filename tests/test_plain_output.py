"""Output that reaches no terminal is written without rich, and reads exactly as rich would write it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.errors import MarkupError
from rich.markup import escape, render

from envsync.cli.app import escape_markup, strip_markup

# The characters rich's markup is made of (no ':', where rich would put emoji in on its own).
MARKUPISH = st.text(alphabet="ab[]/\\ #@=x\n", max_size=40)


@settings(max_examples=3000, deadline=None)
@given(MARKUPISH)
def test_escaping_is_riches_and_escaped_text_prints_as_rich_prints_it(text: str) -> None:
    assert escape_markup(text) == escape(text)
    line = f"[bold yellow]WARNING {escape_markup(text)}[/]"  # how envsync writes text inside markup
    assert strip_markup(line) == render(line).plain
    if "\\" not in text:
        assert strip_markup(line) == f"WARNING {text}"


@settings(max_examples=3000, deadline=None)
@given(MARKUPISH)
def test_markup_is_shown_as_rich_shows_it_without_styles(text: str) -> None:
    try:
        shown = render(text).plain
    except MarkupError:  # a closing tag with nothing open: rich refuses, envsync never writes one
        return
    assert strip_markup(text) == shown


def _envsync(home: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """envsync in a child whose stdout and stderr are pipes; it reports whether rich was imported."""
    code = (
        "import sys\n"
        "from envsync.cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "sys.stderr.write('rich imported: %s\\n' % any(m.split('.')[0] == 'rich' for m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env={**base, "ENVSYNC_HOME": str(home), **env}
    )


def test_piped_output_is_plain_text_without_importing_rich(tmp_path: Path) -> None:
    out = _envsync(tmp_path / "home", "kernels", "list")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "no envsync kernels\n"
    assert "rich imported: False" in out.stderr


def test_asking_for_colour_on_a_pipe_goes_through_rich(tmp_path: Path) -> None:
    out = _envsync(tmp_path / "home", "kernels", "list", FORCE_COLOR="1")
    assert out.returncode == 0, out.stderr
    assert "no envsync kernels" in out.stdout
    assert "rich imported: True" in out.stderr
