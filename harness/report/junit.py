"""JUnit XML of a drill (junit.xml): one testsuite, a testcase per objective, integrity check and checklist item."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, Mapping

from .model import build_view, objective_row, parse_time

# Characters XML 1.0 forbids even when escaped; ElementTree would write them as they are.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", {"classname": classname, "name": name, "time": "0"})


def render_junit(report: Mapping[str, Any]) -> str:
    """JUnit XML text for a (redacted) report dict.

    Missed objectives, failed integrity checks and failed checklist items are `<failure>`s;
    skipped checklist items are `<skipped/>`; integrity warnings pass with the details in
    `<system-out>`.  An aborted run, or a failed run with no failing item to show for it,
    adds a `run` testcase carrying an `<error>`.
    """
    view = build_view(report)
    kind = str(report.get("kind") or "drill")
    base = f"drill.{kind}"
    started, ended = parse_time(report.get("started_at")), parse_time(report.get("ended_at"))
    suite = ET.Element("testsuite", {"name": f"drill {kind}"})
    failures = errors = skipped = 0

    for o in report.get("objectives") or []:
        if not isinstance(o, Mapping):
            continue
        row = objective_row(o)
        case = _case(suite, f"{base}.objectives", row.service)
        case.set("time", f"{float(o['rto_measured_s']):.3f}" if isinstance(o.get("rto_measured_s"), (int, float)) else "0")
        if row.met is False:
            failures += 1
            ET.SubElement(case, "failure", {"type": "ObjectiveMissed", "message": row.reason}).text = (
                f"{row.service} ({row.priority}): RTO {row.rto_measured} (target {row.rto_target}), "
                f"RPO {row.rpo_measured} (target {row.rpo_target})")
        else:
            ET.SubElement(case, "system-out").text = (
                f"RTO {row.rto_measured} (target {row.rto_target}), RPO {row.rpo_measured} (target {row.rpo_target})")

    for i in report.get("integrity") or []:
        if not isinstance(i, Mapping):
            continue
        case = _case(suite, f"{base}.integrity", str(i.get("check", "?")))
        status, details = str(i.get("status") or "").lower(), str(i.get("details") or "")
        if status == "fail":
            failures += 1
            ET.SubElement(case, "failure", {"type": "IntegrityViolation", "message": details or "integrity check failed"}).text = details
        elif status == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", {"message": details} if details else {})
        elif details:
            ET.SubElement(case, "system-out").text = f"{status}: {details}"

    for i in report.get("checklist") or []:
        if not isinstance(i, Mapping):
            continue
        phase = str(i.get("phase") or "other")
        case = _case(suite, f"{base}.checklist.{phase}", str(i.get("item", "?")))
        status = str(i.get("status") or "").lower()
        expected, observed = str(i.get("expected") or ""), str(i.get("observed") or "")
        if status == "fail":
            failures += 1
            ET.SubElement(case, "failure", {"type": "ChecklistItemFailed",
                                            "message": f"expected {expected}; observed {observed}"})
        elif status == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", {"message": observed} if observed else {})
        else:
            ET.SubElement(case, "system-out").text = f"expected {expected}; observed {observed}"

    status = str(report.get("status") or "").lower()
    if status == "aborted" or (status != "passed" and failures == 0):
        errors += 1
        case = _case(suite, base, "run")
        ET.SubElement(case, "error", {"type": view.verdict, "message":
                                      f"{view.verdict} (exit code {report.get('exit_code')})"}).text = view.summary or None

    cases = len(suite.findall("testcase"))
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{max(ended - started, 0.0):.3f}" if started is not None and ended is not None else "0")
    if report.get("started_at"):
        suite.set("timestamp", str(report["started_at"]))
    props = ET.Element("properties")
    for key in ("run_id", "kind", "target", "status", "exit_code"):
        ET.SubElement(props, "property", {"name": key, "value": str(report.get(key, ""))})
    suite.insert(0, props)

    root = ET.Element("testsuites", {"name": "drill", "tests": str(cases), "failures": str(failures),
                                     "errors": str(errors), "skipped": str(skipped), "time": suite.get("time", "0")})
    root.append(suite)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _XML_INVALID.sub("\ufffd", text) + "\n"
