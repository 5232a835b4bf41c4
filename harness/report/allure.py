"""Allure results of a drill in `<report dir>/allure-results`: one result per experiment (steps from the journal) or attachments on the running scenario."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from allure_commons.logger import AllureFileLogger
from allure_commons.model2 import (Attachment, Label, Parameter, Status, StatusDetails, TestResult,
                                   TestStepResult)
from allure_commons.utils import md5

log = logging.getLogger(__name__)

#: the folder inside a report dir that holds the run's Allure results
RESULTS_DIR = "allure-results"

#: report exit code -> Allure status: objectives missed / integrity violated fail the test, a harness error, a
#: safety refusal or an interruption break it (the drill could not judge the system)
_STATUS_BY_EXIT = {0: Status.PASSED, 3: Status.FAILED, 4: Status.FAILED}
_ACTIVITY_STATUS = {"succeeded": Status.PASSED, "failed": Status.FAILED, "skipped": Status.SKIPPED}


def _ms(value: Any) -> int | None:
    """An ISO-8601 time (report, journal) as epoch milliseconds."""
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def status_of(report: Mapping[str, Any]) -> str:
    return _STATUS_BY_EXIT.get(int(report.get("exit_code", 1)), Status.BROKEN)


def attachments(report: Mapping[str, Any], report_dir: Path) -> list[tuple[str, bytes, str, str]]:
    """(name, body, mime type, extension) of what a drill's Allure result carries: report.json, the timeline chart
    (the report's own SVG) and the integrity checks' details."""
    from .chart import render_timeline_svg

    out: list[tuple[str, bytes, str, str]] = []
    rj = Path(report_dir) / "report.json"
    if rj.is_file():
        out.append(("report.json", rj.read_bytes(), "application/json", "json"))
    try:
        out.append(("timeline chart", render_timeline_svg(report).encode(), "image/svg+xml", "svg"))
    except Exception as e:  # noqa: BLE001 - a chart that cannot be drawn must not cost the results
        log.warning("allure: timeline chart not attached: %s", e)
    integrity = {"integrity": report.get("integrity") or [], "writes": report.get("writes") or {},
                 "rpo_by_service": report.get("rpo_by_service") or {}}
    out.append(("integrity details", json.dumps(integrity, indent=2, default=str).encode(), "application/json",
                "json"))
    return out


def _step(name: str, status: str, start: Any = None, stop: Any = None, message: str | None = None,
          steps: list | None = None, parameters: list | None = None) -> TestStepResult:
    return TestStepResult(name=name, status=status, start=_ms(start), stop=_ms(stop), stage="finished",
                          statusDetails=StatusDetails(message=message) if message else None, steps=steps or [],
                          parameters=parameters or [])


def _activity_step(run: Mapping[str, Any]) -> TestStepResult:
    act = run.get("activity") or {}
    status = _ACTIVITY_STATUS.get(str(run.get("status")), Status.BROKEN)
    if "tolerance_met" in run and run.get("tolerance_met") is False:
        status = Status.FAILED
    exc = "".join(run.get("exception") or []).strip()
    message = exc.splitlines()[-1] if exc else None
    provider = act.get("provider") or {}
    params = [Parameter(name="type", value=str(act.get("type", "")))]
    if provider.get("func"):
        params.append(Parameter(name="function", value=f"{provider.get('module', '')}.{provider['func']}"))
    return _step(f"{act.get('type', 'activity')}: {act.get('name', '?')}", status, run.get("start"), run.get("end"),
                 message, parameters=params)


def _group(name: str, runs: list[Mapping[str, Any]], start: Any = None, stop: Any = None,
           status: str | None = None) -> TestStepResult:
    steps = [_activity_step(r) for r in runs]
    if status is None:
        bad = [s.status for s in steps if s.status != Status.PASSED]
        status = bad[0] if bad else Status.PASSED
    start = start or (runs[0].get("start") if runs else None)
    stop = stop or (runs[-1].get("end") if runs else None)
    return _step(name, status, start, stop, steps=steps)


def journal_steps(journal: Mapping[str, Any] | None) -> list[TestStepResult]:
    """A step per phase of a Chaos Toolkit journal, with a sub-step per activity: steady state before, method,
    steady state after, rollbacks."""
    if not journal:
        return []
    out = []
    states = journal.get("steady_states") or {}
    for when in ("before", "after"):
        st = states.get(when)
        if st:
            met = st.get("steady_state_met")
            out.append(_group(f"steady state hypothesis ({when} the method)", list(st.get("probes") or []),
                              status=Status.PASSED if met else Status.FAILED))
        if when == "before":
            out.append(_group("method", list(journal.get("run") or [])))
    rollbacks = list(journal.get("rollbacks") or [])
    if rollbacks:
        out.append(_group("rollbacks", rollbacks))
    return out


def write_experiment_result(report: Mapping[str, Any], report_dir: Path,
                            journal: Mapping[str, Any] | None = None) -> Path:
    """One Allure result for a Chaos Toolkit run (profile, experiment, plain `chaos run`): a step per activity,
    the run's status, the experiment's tags as labels, report.json / timeline chart / integrity as attachments.
    Returns the results folder."""
    out = Path(report_dir) / RESULTS_DIR
    logger = AllureFileLogger(out)
    experiment = (journal or {}).get("experiment") or {}
    title = str(experiment.get("title") or report.get("target") or report.get("kind"))
    kind = str(report.get("kind", ""))
    full_name = f"{kind}: {title}"
    steps = journal_steps(journal)
    if not steps:  # refused or broken before Chaos Toolkit ran: the one thing that happened
        steps = [_step("drill refused or stopped before the experiment ran", status_of(report),
                       report.get("started_at"), report.get("ended_at"), str(report.get("error") or "") or None)]
    labels = [Label(name="tag", value=str(t)) for t in experiment.get("tags") or []]
    labels += [Label(name="suite", value=kind), Label(name="feature", value=title),
               Label(name="framework", value="chaostoolkit"),
               Label(name="host", value=str((report.get("environment") or {}).get("host", "")))]
    env = report.get("environment") or {}
    result = TestResult(
        uuid=str(uuid.uuid4()), name=title, fullName=full_name, testCaseId=md5(full_name),
        historyId=md5(full_name), status=status_of(report), stage="finished",
        description=str(report.get("summary") or ""),
        statusDetails=StatusDetails(message=str(report.get("error") or report.get("summary") or "")),
        start=_ms(report.get("started_at")), stop=_ms(report.get("ended_at")), steps=steps, labels=labels,
        parameters=[Parameter(name="run id", value=str(report.get("run_id")), excluded=True),
                    Parameter(name="environment", value=str(env.get("name", "lab")))])
    for name, body, mime, ext in attachments(report, report_dir):
        source = f"{uuid.uuid4()}-attachment.{ext}"
        logger.report_attached_data(body=body, file_name=source)
        result.attachments.append(Attachment(name=name, source=source, type=mime))
    logger.report_result(result)
    return out


def attach_to_scenario(report: Mapping[str, Any], report_dir: Path) -> None:
    """Attach the drill's files to the Gherkin scenario being run (allure-pytest-bdd writes its result); without
    that plugin active (no --alluredir) allure's attach does nothing."""
    import allure

    for name, body, mime, ext in attachments(report, report_dir):
        allure.attach(body, name=name, attachment_type=mime, extension=ext)


def write_results(report: Mapping[str, Any], report_dir: Path, journal: Mapping[str, Any] | None = None) -> None:
    """The drill's Allure results: a feature's scenario gets the attachments (allure-pytest-bdd writes the result
    with its Given/When/Then steps), any other run gets its own result."""
    if str(report.get("target", "")).endswith(".feature") or report.get("target") == "features":
        attach_to_scenario(report, report_dir)
    else:
        write_experiment_result(report, report_dir, journal)
