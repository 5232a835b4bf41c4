"""Communication during a real drill: a Korean report, notifications in the outbox and at an SMTP server and a
webhook, and the lab's status page seen non-operational during the failover and operational after."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CATALOG = {"authentication", "api-gateway", "voucher-service", "tax-invoice-service"}


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def _chromium() -> str | None:
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.fixture(scope="module")
def drill_with_comms(drill_lab, tmp_path_factory):
    """One ci-smoke in Korean with SMTP and a webhook configured, the status page polled all along."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    from harness.lab.procs import free_ports

    class Keep(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    handler = Keep()
    smtp_port = free_ports(1)[0]
    smtp = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    _Hook.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()

    page = drill_lab.status()["status_page"]["url"]
    seen: list[tuple[float, dict[str, str]]] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=2) as c:
            while not stop.is_set():
                try:
                    seen.append((time.time(), {s["service"]: s["status"]
                                               for s in c.get(page + "/api/status/services").json()}))
                except httpx.HTTPError:
                    pass
                stop.wait(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    out = tmp_path_factory.mktemp("comms") / "report"
    env = dict(os.environ, DRILL_STATE_DIR=str(drill_lab.state),
               DRILL_NOTIFY_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
               DRILL_NOTIFY_CUSTOMER_TO="customers@kerp.example",
               DRILL_NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{hook.server_address[1]}/notify")
    try:
        r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "ci-smoke", "--lang", "ko", "--report-dir",
                            str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        # after the run: the page must settle back to operational (probes every 0.5 s)
        deadline = time.time() + 20
        while time.time() < deadline and not (seen and all(v == "operational" for v in seen[-1][1].values())):
            time.sleep(0.2)
    finally:
        stop.set()
        poller.join(5)
        smtp.stop()
        hook.shutdown()
        hook.server_close()
    yield {"proc": r, "out": out, "mails": handler.messages, "posts": list(_Hook.received), "seen": seen,
           "page": page}


def test_korean_report_and_console(drill_with_comms):
    r, out = drill_with_comms["proc"], drill_with_comms["out"]
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert md.startswith("# DR 훈련 보고서: ci-smoke") and "## ✅ 통과" in md
    assert "| 백업 상태 확인 |" in md and "| DNS 전환 확인 |" in md and "| 데이터 정합성 검증 |" in md
    assert '<html lang="ko">' in (out / "report.html").read_text()
    assert "복구 목표" in r.stderr and "체크리스트: 통과" in r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["checklist"][0]["item"] == "backup status"  # report.json keeps its English contract


def test_notifications_in_the_outbox_at_the_smtp_server_and_the_webhook(drill_with_comms):
    out, mails, posts = drill_with_comms["out"], drill_with_comms["mails"], drill_with_comms["posts"]
    report = json.loads((out / "report.json").read_text())
    notes = report["notifications"]
    events = [n["event"] for n in notes if n["audience"] == "internal"]
    assert events[0] == "fault_injected" and events[-1] == "drill_finished"
    assert "failover_started" in events
    assert {n["service"] for n in notes if n["event"] == "service_restored"} == CATALOG
    assert all(n["smtp"] == "sent" and n["webhook"] == 200 for n in notes), notes
    assert len(mails) == len(notes) == len(posts) == len(list((out / "outbox").glob("*.eml")))
    assert {m["X-Drill-Run"] for m in mails} == {report["run_id"]}
    finished = (out / "outbox" / f"{len(notes) - 1:02d}-drill_finished-internal.txt").read_text()
    assert "L1 On-Call Engineer" in finished and "호출됨" in finished
    for o in report["objectives"]:  # the measured RTO is in the final notice
        assert o["service"] in finished
    assert posts[0]["lang"] == "ko" and posts[0]["event"] == "fault_injected"
    status_url = drill_with_comms["page"]
    assert status_url in (out / "outbox" / "02-fault_injected-customer.txt").read_text()


def test_status_page_goes_non_operational_during_the_drill_and_operational_after(drill_with_comms):
    seen = drill_with_comms["seen"]
    states = [set(s.values()) for _, s in seen]
    first_bad = next(i for i, st in enumerate(states) if st != {"operational"})
    assert states[0] == {"operational"}, "the page was not operational before the fault"
    assert any("outage" in st for st in states[first_bad:]), "no outage seen during the region failover"
    assert states[-1] == {"operational"}, f"not operational after the drill: {seen[-1]}"
    incidents = httpx.get(drill_with_comms["page"] + "/api/status/incidents", timeout=5).json()
    drill_incidents = [i for i in incidents if i["startedAt"] >= json.loads(
        (drill_with_comms["out"] / "report.json").read_text())["started_at"][:19]]
    assert drill_incidents and all(i["status"] == "resolved" for i in drill_incidents)
    assert set().union(*(i["services"] for i in drill_incidents)) == CATALOG
    assert any(i["severity"] == "critical" for i in drill_incidents)


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install -y chromium); CI installs it")
def test_status_page_screenshot_in_headless_chromium(drill_with_comms, tmp_path):
    from PIL import Image, ImageStat

    page = drill_with_comms["page"]
    profile = tmp_path / "profile"
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}"]
    png = tmp_path / "status.png"
    proc = subprocess.run(base + [f"--screenshot={png}", "--window-size=1000,900", page + "/"],
                          capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    keep = os.environ.get("DRILL_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / "status-page.png")
    with Image.open(png) as img:
        rgb = img.convert("RGB")
        assert img.size == (1000, 900)
        assert len(rgb.resize((250, 225)).getcolors(maxcolors=1 << 16) or []) > 16, "too few colours"
        # the green "All Systems Operational" banner below the title
        band = ImageStat.Stat(rgb.crop((300, 60, 700, 130))).mean
        assert band[1] > band[0] and band[1] > band[2], f"no green banner (mean colour {band})"
    dom = subprocess.run(base + ["--dump-dom", page + "/"], capture_output=True, text=True, timeout=120)
    assert 'id="services"' in dom.stdout and "All Systems Operational" in dom.stdout
    assert dom.stdout.count('class="svc operational"') == 4
    assert "resolved" in dom.stdout  # the drill's incident is listed as resolved
