"""The pre-fault gate on the real lab: a replication link cut, or holding every WAL record, refuses the run's first
fault (exit 5, the failing pre_test item named, nothing injected, the checklist saying why); a lag within the plan's
threshold does not."""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from tests.integration.test_drill_run import ROOT, assert_lab_on_primary, drill
from tests.timing import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(drill_lab):
    return drill_lab


def _proxy_url(lab) -> str:
    return lab.topology()["toxiproxy"]["url"] + "/proxies/pg_replication"


def _streaming(lab) -> bool:
    return lab.status()["health"]["postgres_dr"].get("wal_receiver") == "streaming"


@contextmanager
def _link(lab, *, toxic: dict | None = None, enabled: bool = True) -> Iterator[None]:
    """The replication link degraded by hand before the run (the fault proxy's API, not a fault of the run: the
    ledger knows nothing of it), restored afterwards whatever the run did."""
    url = _proxy_url(lab)
    poll(lambda: _replicating(lab), 30, "the standby replays the primary's commits")
    try:
        if toxic is not None:
            httpx.post(url + "/toxics", json=toxic, timeout=5).raise_for_status()
        if not enabled:
            httpx.post(url, json={"enabled": False}, timeout=5).raise_for_status()
            poll(lambda: not _streaming(lab), 10, "the standby noticed the cut")
        yield
    finally:
        if not enabled:
            httpx.post(url, json={"enabled": True}, timeout=5)
        if toxic is not None:
            httpx.delete(f"{url}/toxics/{toxic['name']}", timeout=5)
        poll(lambda: _replicating(lab), 30, "the standby replays the primary's commits again")


def _replicating(lab) -> bool:
    from harness.targets.postgres import probes

    return probes.replica_lag(2, configuration={"drill_state_dir": str(lab.state)})["ok"]


def _overrides(tmp_path: Path, threshold: str) -> Path:
    """Plan overrides with the replica_lag threshold set to `threshold` (the pre_test list is replaced whole)."""
    plan = yaml.safe_load((ROOT / "harness" / "config" / "plan.yaml").read_text())
    items = plan["checklist"]["pre_test"]
    for item in items:
        if item["id"] == "replica_lag":
            item["threshold"] = threshold
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump({"checklist": {"pre_test": items}}))
    return path


def _injected_by(lab, run_id: str) -> list:
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    return [e for e in FaultLedger(ledger_path(lab.state)).injected() if e.run_id == run_id]


def _assert_refused_on_replica_lag(lab, r: subprocess.CompletedProcess, out: Path, why: str) -> dict:
    stderr = " ".join(r.stderr.split())
    assert r.returncode == 5, r.stderr[-3000:]
    assert "not injecting: pre_test replica_lag: " + why in stderr, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["exit_code"] == 5 and report["error"].startswith("not injecting: pre_test replica_lag: " + why)
    checklist = {c["id"]: c for c in report["checklist"]}
    assert checklist["replica_lag"]["status"] == "fail" and why in checklist["replica_lag"]["observed"]
    # the other pre_test items were observed too: the report says what held
    assert checklist["backups_recent"]["status"] == "pass", checklist["backups_recent"]
    assert checklist["dr_cluster_ready"]["status"] == "pass", checklist["dr_cluster_ready"]
    timeline = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines() if line.strip()]
    assert [e for e in timeline if e["kind"] == "fault"] == []
    assert _injected_by(lab, report["run_id"]) == []
    # the steady-state probe and the checklist item read the one measurement: no "probe passed" before the refusal
    lag_checks = [e for e in timeline if e["event"] == "checklist: replica_lag"]
    assert len(lag_checks) == 1, lag_checks
    assert any(e["event"] == "probe succeeded: dr-replication-lag-under-60s (returned False)" for e in timeline)
    return report


def test_replication_link_cut_refuses_the_first_fault(lab, tmp_path):
    out = tmp_path / "report"
    with _link(lab, enabled=False):
        r = drill("run", "ci-smoke", "--report-dir", str(out), state=lab.state)
    _assert_refused_on_replica_lag(lab, r, out, "no standby streaming")
    assert_lab_on_primary(lab)


def test_wal_held_until_the_item_fails_refuses_the_first_fault(lab, tmp_path):
    out = tmp_path / "report"
    hold = {"name": "hold-wal", "type": "timeout", "stream": "downstream", "attributes": {"timeout": 0}}
    with _link(lab, toxic=hold):
        t0 = time.monotonic()
        r = drill("run", "ci-smoke", "--report-dir", str(out), "--plan-overrides", str(_overrides(tmp_path, "3s")),
                  state=lab.state)
        took = time.monotonic() - t0
    report = _assert_refused_on_replica_lag(lab, r, out, "WAL held")
    assert "within 3 s" in {c["id"]: c for c in report["checklist"]}["replica_lag"]["observed"]
    print(f"WAL held: refused in {took:.1f} s")
    assert_lab_on_primary(lab)


def test_a_lag_within_the_threshold_is_measured_not_refused(lab):
    from harness.targets.postgres import probes

    cfg = {"drill_state_dir": str(lab.state)}
    slow = {"name": "slow-wal", "type": "latency", "stream": "downstream", "attributes": {"latency": 400}}
    with _link(lab, toxic=slow):
        r = probes.replica_lag(60, configuration=cfg)
    assert r["ok"] is True and 0.4 <= r["lag_s"] < 60, r
    assert probes.replica_lag(60, configuration=cfg)["lag_s"] < 0.4  # the latency gone, so is the lag


def test_plain_chaos_run_with_the_link_cut_is_refused_by_the_same_gate(lab, tmp_path):
    env = dict(os.environ, DRILL_STATE_DIR=str(lab.state), DRILL_REPORTS_DIR=str(tmp_path / "reports"))
    with _link(lab, enabled=False):
        r = subprocess.run(["chaos", "--no-version-check", "run", "--rollback-strategy", "always",
                            "--journal-path", str(tmp_path / "journal.json"),
                            str(ROOT / "experiments" / "region-failover.json")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    (path,) = list((tmp_path / "reports").glob("*/report.json"))
    report = json.loads(path.read_text())
    assert report["exit_code"] == 5, (r.stdout + r.stderr)[-3000:]
    assert report["error"].startswith("not injecting: pre_test replica_lag: no standby streaming")
    assert [e for e in report["timeline"] if e["kind"] == "fault"] == []
    assert _injected_by(lab, report["run_id"]) == []
    assert_lab_on_primary(lab)
