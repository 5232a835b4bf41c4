"""What a finished drill leaves besides its report files: its Allure results and its row in the run history."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError


def record_run(report: Mapping[str, Any], report_dir: Path, journal: Mapping[str, Any] | None = None) -> None:
    """Allure results in `<report dir>/allure-results` and the run's row in the history store. Neither may cost the
    run its report or exit code: a failure is one warning line on stderr."""
    from harness.report import allure

    try:
        allure.write_results(report, report_dir, journal)
    except Exception as e:  # noqa: BLE001 - the report is written; the results are an extra
        print(f"drill: warning: allure results not written: {type(e).__name__}: {e}", file=sys.stderr)
    record_history(report, report_dir)


def record_history(report: Mapping[str, Any], report_dir: Path | None) -> None:
    from harness.report import history

    try:
        history.record(report, report_dir=report_dir)
    except HarnessError as e:
        print(f"drill: warning: {e}", file=sys.stderr)
