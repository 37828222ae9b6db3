"""Running the CLI in-process from tests, and the one-line error every bad flag must give."""

from __future__ import annotations

import pytest

from robustlab.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``robustlab ARGS`` run in this process."""
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> str:
    """stderr is exactly one line, starting ``robustlab: ``, containing every fragment; returns it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("robustlab: ") and all(f in lines[0] for f in fragments), lines[0]
    return lines[0]
