"""Assertions on a CLI run's result that several test files share."""

from __future__ import annotations


def assert_one_line_error(result, *words: str) -> str:
    """Exit code 2 with exactly one error line (after click's usage lines for a bad option), no traceback, naming
    every one of ``words``; returns that line."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], result.output
    return errors[0]
