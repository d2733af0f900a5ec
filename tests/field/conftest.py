"""Prints the field corpus pass counts at the end of a run that included it."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.field.test_field_corpus import CAPTURES, RESULTS

    lines = []
    for path, what in (
        ("cli", "`dlmsd decode`"),
        ("daemon", "the daemon (serial pty, TCP bridge)"),
    ):
        results = RESULTS[path]
        if results:
            passed = sum(results.values())
            lines.append(
                f"{passed}/{len(CAPTURES)} captures decode to their stated values through {what}"
                + (
                    f" ({len(CAPTURES) - len(results)} not run)"
                    if len(results) < len(CAPTURES)
                    else ""
                )
            )
    if lines:
        makes = len({capture.make for capture in CAPTURES})
        terminalreporter.section(f"field corpus: {len(CAPTURES)} real pushes, {makes} makes")
        for line in lines:
            terminalreporter.write_line(line)
