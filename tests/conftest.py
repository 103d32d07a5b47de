"""What a whole test run shares: the folders kept for failed tests (a stack's logs, a
console's screenshot), named in the run's summary.

A run spread over processes (`pytest -n 2`, pytest-xdist) has them named by its workers: each
adds its own to a file the first process made, and that process lists them at the end.
"""

import os
import tempfile
from pathlib import Path

import pytest

KEPT = "ORCH_TESTS_KEPT"
"""The environment variable naming the file of kept paths, one a line (inherited by workers)."""


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the run's first process, before any worker
        handle, name = tempfile.mkstemp(prefix="orch-kept-", suffix=".txt")
        os.close(handle)
        os.environ[KEPT] = name


def keep(path: Path) -> None:
    """Name `path` in the run's summary."""
    with open(os.environ[KEPT], "a", encoding="utf-8") as kept:
        kept.write(f"{path}\n")


def kept() -> list[Path]:
    """The paths named so far."""
    return [Path(line) for line in Path(os.environ[KEPT]).read_text().splitlines()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    for path in kept():
        terminalreporter.write_line(f"kept for a failed test: {path}")
    Path(os.environ[KEPT]).unlink(missing_ok=True)
