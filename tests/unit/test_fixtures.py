"""The integration stack's log folders are kept for failed tests only."""

from pathlib import Path

import pytest

from tests.conftest import KEPT, kept
from tests.integration import conftest


def test_a_passing_stack_leaves_no_folder_a_failing_one_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the log folders of two stacks (named in a summary of this test's own)
    monkeypatch.setenv(KEPT, str(tmp_path / "kept.txt"))
    (tmp_path / "kept.txt").touch()
    passed, failed = tmp_path / "orch-sqlite-passed", tmp_path / "orch-sqlite-failed"
    for logs in (passed, failed):
        logs.mkdir()
        (logs / "api.log").write_text("...")
    # When their tests end, one without failures and one with
    conftest._keep_logs_if_failed(passed, failed=False)
    conftest._keep_logs_if_failed(failed, failed=True)
    # Then only the failed one is left, and it is named in the run's summary
    assert not passed.exists()
    assert (failed / "api.log").exists() and kept() == [failed]
