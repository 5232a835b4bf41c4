"""Korean and English reports, notifications (render, escalation, outbox, SMTP, webhook) and the status board."""

from __future__ import annotations

import copy
import email
import importlib.util
import json
import re
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.config import load_plan
from harness.errors import UsageError
from harness.lab.statuspage.board import DEGRADED, OPERATIONAL, OUTAGE, Probe, StatusBoard
from harness.report import write_report
from harness.report.console import print_summary
from harness.report.htmlpage import render_html
from harness.report.i18n import CHECKLIST, translator
from harness.report.markdown import render_markdown
from harness.report.model import build_view
from harness.report.notify import NotifyConfig, dispatch, escalation_steps, events_of, render

HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _samples():
    path = Path(__file__).with_name("test_report_writers.py")
    spec = importlib.util.spec_from_file_location("_drill_report_samples_i18n", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = _samples()
FT = S.FAULT_T


def drill_report(rto_s=(2.4, 3.1), met=True) -> dict:
    """A report with the plan's checklist ids, measured RTOs and a fault and failover in its timeline."""
    r = S.sample_report()
    r["checklist"] = [{"phase": "pre_test", "id": "backups_recent", "item": "backup status",
                       "expected": "the 5 most recent backup files exist", "observed": "5 backups", "status": "pass"},
                      {"phase": "post_test", "id": "failback", "item": "failback",
                       "expected": "traffic returns to the primary region", "observed": "primary", "status": "pass"}]
    r["timeline"] = [S._event(FT, "fault", "fail_region region:primary", phase="inject"),
                     S._event(FT + 0.5, "failover", "outage detected")]
    r["rto"] = [{"service": svc, "rto_s": v, "first_success_t": S._iso(FT + v) if v is not None else None}
                for svc, v in zip(("authentication", "voucher-service"), rto_s)]
    r["objectives"] = [{"service": "authentication", "priority": "P1", "rto_target_s": 3600, "rto_measured_s": rto_s[0],
                        "rpo_target_s": 900, "rpo_measured_s": 0.0, "met": met, "measured": True},
                       {"service": "voucher-service", "priority": "P2", "rto_target_s": 7200,
                        "rto_measured_s": rto_s[1], "rpo_target_s": 3600, "rpo_measured_s": 0.0, "met": met,
                        "measured": True}]
    if not met:
        r["status"], r["exit_code"] = "failed", 3
    return r


# -- reports in two languages ---------------------------------------------------------------------------
def test_korean_report_has_hangul_headings_and_the_plans_checklist_words(tmp_path):
    paths = write_report(drill_report(), tmp_path / "ko", lang="ko")
    md = paths["md"].read_text()
    assert md.startswith("# DR 훈련 보고서: ci-smoke")
    for heading in ("## 복구 목표 (RTO/RPO)", "## 데이터 정합성", "## 체크리스트", "### 사전 점검 (pre_test)",
                    "## 주요 이벤트"):
        assert heading in md
    assert "| 백업 상태 확인 | 최근 5개 백업 파일 존재 |" in md
    assert "| 페일백 실행 | Primary로 트래픽 복귀 |" in md
    assert "authentication (인증/인가)" in md and "\u2705 통과" in md
    assert "Recovery objectives" not in md and "backup status" not in md
    html = paths["html"].read_text()
    assert '<html lang="ko">' in html and "<h2>복구 목표 (RTO/RPO)</h2>" in html and "백업 상태 확인" in html
    assert "<h1>통과</h1>" in html


def test_english_stays_english_and_report_json_does_not_change_with_the_language(tmp_path):
    r = drill_report()
    en = write_report(copy.deepcopy(r), tmp_path / "en")
    ko = write_report(copy.deepcopy(r), tmp_path / "ko", lang="ko")
    assert en["json"].read_text() == ko["json"].read_text()
    md = en["md"].read_text()
    assert "## Recovery objectives" in md and "| backup status |" in md and not HANGUL.search(md)
    assert not HANGUL.search(en["html"].read_text())


@pytest.mark.parametrize("make", [S.sample_report, S.missed_report, S.aborted_report, drill_report])
def test_every_text_of_a_korean_report_is_in_the_catalog(make):
    v = build_view(make(), "ko")
    render_markdown(v.report, view=v)
    render_html(v.report, view=v)
    from rich.console import Console

    print_summary(v.report, Console(file=open("/dev/null", "w"), width=200), lang="ko")
    assert not v.t.missing, f"not in the Korean catalog: {sorted(v.t.missing)}"


def test_console_summary_in_korean():
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    print_summary(drill_report(), Console(file=buf, width=160), lang="ko")
    text = buf.getvalue()
    assert "통과" in text and "복구 목표" in text and "체크리스트: 통과 2, 실패 0, 건너뜀 0" in text


def test_a_language_that_is_not_en_or_ko_is_refused():
    with pytest.raises(UsageError, match="'fr'"):
        translator("fr")
    assert set(CHECKLIST) == {c.id for c in load_plan().checklist}


# -- notifications ---------------------------------------------------------------------------------------
def test_events_and_escalation_of_a_fast_recovery():
    r = drill_report()
    evs = events_of(r)
    assert [e.event for e in evs] == ["fault_injected", "failover_started", "service_restored", "service_restored",
                                      "drill_finished"]
    assert evs[0].at == FT and evs[2].service == "authentication" and evs[2].data["rto_s"] == 2.4
    steps = escalation_steps(load_plan(), r)
    assert [(s["level"], s["call_at_s"], s["response_time_s"], s["called"]) for s in steps] == [
        (1, 0.0, 900.0, True), (2, 1800.0, 1800.0, False), (3, 3600.0, 3600.0, False), (4, 7200.0, 7200.0, False)]


def test_escalation_reaches_every_level_when_a_service_never_recovers_and_sla_is_missed():
    steps = escalation_steps(load_plan(), drill_report(rto_s=(2.4, None), met=False))
    assert [s["called"] for s in steps] == [True, True, True, True]
    assert steps[1]["name"] == "DevOps Lead" and steps[3]["name"] == "Executive Team"


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_internal_and_customer_notices_for_every_event(lang):
    notes = render(drill_report(), load_plan(), lang, status_url="http://status.example/")
    assert len(notes) == 10 and [n.audience for n in notes[:2]] == ["internal", "customer"]
    internal_end = notes[-2]
    assert "authentication" in internal_end.body and "2.4" in internal_end.body
    assert ("L2 DevOps Lead" in internal_end.body) and ("15" in internal_end.body)
    assert "http://status.example/" in notes[-1].body and "L1" not in notes[-1].body  # customers see no escalation
    if lang == "ko":
        assert "장애 주입" in notes[0].subject and "호출됨" in notes[0].body and "고객님" in notes[1].body
    else:
        assert "Fault injected" in notes[0].subject and "CALLED" in notes[0].body and not HANGUL.search(notes[1].body)


def test_bad_notification_settings_are_usage_errors():
    with pytest.raises(UsageError, match="'mail.example'"):
        NotifyConfig.from_sources({"drill_notify_smtp_url": "mail.example"})
    with pytest.raises(UsageError, match="'nobody'"):
        NotifyConfig.from_sources({}, {"DRILL_NOTIFY_CUSTOMER_TO": "a@b.example,nobody"})
    with pytest.raises(UsageError, match="drill_notify_smpt_url"):
        NotifyConfig.from_sources({"drill_notify_smpt_url": "smtp://x:25"})
    cfg = NotifyConfig.from_sources({}, {})
    assert cfg.outbox and cfg.smtp_url is None and cfg.webhook_url is None  # only the outbox by default


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Keep(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    from harness.lab.procs import free_ports

    handler = Keep()
    port = free_ports(1)[0]
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield f"smtp://127.0.0.1:{port}", handler.messages
    finally:
        ctl.stop()


@pytest.fixture
def webhook():
    _Hook.received = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/hook", _Hook.received
    finally:
        srv.shutdown()
        srv.server_close()


def test_dispatch_writes_the_outbox_sends_smtp_and_posts_the_webhook(tmp_path, smtp_server, webhook):
    smtp_url, mails = smtp_server
    hook_url, posts = webhook
    cfg = NotifyConfig.from_sources({"drill_notify_smtp_url": smtp_url, "drill_notify_webhook_url": hook_url,
                                     "drill_notify_customer_to": ["customers@kerp.example"]}, {})
    records = dispatch(drill_report(), load_plan(), tmp_path, cfg, "ko")
    assert len(records) == 10
    assert all(r["smtp"] == "sent" and r["webhook"] == 204 for r in records), records
    assert len(mails) == 10
    first = email.message_from_bytes(mails[0].as_bytes(), policy=policy.default)
    assert first["X-Drill-Event"] == "fault_injected" and "장애 주입" in first["Subject"]
    assert "에스컬레이션" in first.get_content()
    assert {m["To"] for m in mails} == {"oncall@kerp.io", "customers@kerp.example"}
    assert [p["event"] for p in posts][:2] == ["fault_injected", "fault_injected"] and posts[0]["lang"] == "ko"
    outbox = tmp_path / "outbox"
    assert len(list(outbox.glob("*.eml"))) == 10 and len(list(outbox.glob("*.txt"))) == 10
    index = json.loads((outbox / "notifications.json").read_text())
    assert index["escalation"][0]["called"] is True and index["notifications"][0]["outbox"].endswith(".eml")
    assert "고객님" in (outbox / "02-fault_injected-customer.txt").read_text()


def test_a_dead_smtp_server_or_webhook_is_recorded_not_raised(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    cfg = NotifyConfig(smtp_url=f"smtp://127.0.0.1:{port}", webhook_url=f"http://127.0.0.1:{port}/x")
    records = dispatch(drill_report(), load_plan(), tmp_path, cfg)
    assert all(r["smtp"].startswith("failed") or r["smtp"] == "no recipients" for r in records)
    assert all(str(r["webhook"]).startswith("failed") for r in records)


# -- status board -----------------------------------------------------------------------------------------
def test_status_board_goes_operational_outage_operational_with_one_incident():
    board = StatusBoard(["authentication", "voucher-service"], window=2,
                        priorities={"authentication": "P1", "voucher-service": "P2"})
    t = 1000.0
    for ok, expect in ((True, OPERATIONAL), (False, DEGRADED), (False, OUTAGE), (True, DEGRADED),
                       (True, OPERATIONAL)):
        t += 0.5
        board.record("voucher-service", Probe(True, 0.01, t))
        assert board.record("authentication", Probe(ok, 0.01, t, "" if ok else "login: HTTP 503")) == expect
    (inc,) = board.incidents()
    assert inc["status"] == "resolved" and inc["severity"] == "critical" and inc["services"] == ["authentication"]
    assert [u["status"] for u in inc["updates"]] == ["investigating", "identified", "monitoring", "resolved"]
    assert board.record("voucher-service", Probe(True, 2.5, t + 1)) == DEGRADED  # slow is degraded
    assert len(board.incidents()) == 2 and board.incidents()[0]["severity"] == "minor"


def test_cli_refuses_an_unknown_language_and_bad_notification_settings_before_the_lab(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, DRILL_STATE_DIR=str(tmp_path / "no-lab"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "ci-smoke", "--lang", "fr"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "drill: error: --lang 'fr' is not a report language (en, ko)"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "ci-smoke", "--report-dir", str(tmp_path / "r")],
                       env=dict(env, DRILL_NOTIFY_WEBHOOK_URL="ftp://x"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "drill_notify_webhook_url 'ftp://x'" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "no-lab").exists()


def test_validate_names_a_bad_language_or_notification_setting_in_an_experiment():
    from harness.drill.validate import drill_configuration_problems

    assert drill_configuration_problems({"drill_lang": "ko", "drill_notify_customer_to": ["a@kerp.example"]}) == []
    problems = drill_configuration_problems({"drill_lang": "fr", "drill_notify_webhook_url": "ftp://x"})
    assert len(problems) == 2 and "drill_lang" in problems[0] and "'ftp://x'" in problems[1]
