"""The catalog's drills inside the primary region: node loss (level 1), availability-zone loss and database failover
(level 2), each run once end to end on the shared session lab (`drill run <experiment>` in a subprocess)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_drill_run import assert_lab_on_primary
from tests.cli import drill_cli
from tests.timing import scaled

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]  # > the drills' own limit



def drill(*args: str, state: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """`drill ARGS` on the shared lab. The timeout is generous (a loaded machine makes the switchback's pg_rewind
    take minutes): killing the drill mid-rollback would leave the lab for `drill recover`."""
    return drill_cli(*args, state=state, timeout=scaled(timeout))


def _faults(report: dict, phase: str = "inject") -> list[dict]:
    return [e for e in report["timeline"] if e["kind"] == "fault" and e["data"].get("phase") == phase]


def _lab_as_found(lab) -> None:
    """Primary region active and healthy, replicas streaming (assert_lab_on_primary), fault ledger empty, every
    node ready."""
    import httpx

    from harness.safety.fault_ledger import FaultLedger, ledger_path

    assert_lab_on_primary(lab)
    assert not FaultLedger(ledger_path(lab.state)).active()
    nodes = httpx.get(lab.status()["supervisor"]["url"] + "/nodes", timeout=5).json()
    assert all(n["ready"] and not n["unschedulable"] for ns in nodes.values() for n in ns), nodes


def test_node_loss_reschedules_the_replicas_without_failover(drill_lab, tmp_path):
    r = drill("run", "experiments/node-loss.json", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    (fault,) = _faults(report)
    assert fault["event"] == "lose_node" and fault["data"]["zone"] == "ap-northeast-2a" and fault["data"]["pods"]
    assert [e["event"] for e in _faults(report, "revert")] == ["lose_node"]
    # the lost node's replicas ran again on the other node, in the other zone; the time the services took to answer
    # again is measured against level 1's downtime on the drill clock (5 min x 0.01); the run's exit code (0,
    # asserted above) holds the report's level objective, judged on the same clock
    (check,) = [e for e in report["timeline"] if e["kind"] == "check" and "rescheduled off primary-node-1" in e["event"]]
    assert check["data"]["drill_downtime_s"] == pytest.approx(3.0)
    back = check["data"]["services_back_s"]
    assert back is not None
    level = report["level_objective"]
    assert level["met"] and level["objective_s"] == pytest.approx(3.0) and level["measured_downtime_s"] <= 3.0
    assert check["data"]["replicas"] and {x["node"] for x in check["data"]["replicas"]} == {"primary-node-2"}
    assert {x["zone"] for x in check["data"]["replicas"]} == {"ap-northeast-2c"}
    # no failover: no failover event, the database and the router never moved, nothing lost
    assert not [e for e in report["timeline"] if e["kind"] == "failover"]
    assert report["writes"]["lost"] == 0 and report["writes"]["acknowledged"] > 50
    assert all(o["met"] for o in report["objectives"])
    _lab_as_found(drill_lab)


def _acknowledged_writes(report_dir: Path) -> dict[str, float]:
    """Request id -> acknowledgement time of every voucher write the workload saw acknowledged (timeline.jsonl)."""
    acked = {}
    for line in (report_dir / "timeline.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == "op" and e["event"] == "ok" and e["data"].get("f") == "write":
            acked[e["data"]["key"]] = e["ts"]
    return acked


def _in_database(lab, keys: set[str]) -> set[str]:
    import psycopg

    with psycopg.connect(lab.pg_nodes()["primary"].dsn, connect_timeout=5) as c:
        rows = c.execute("SELECT request_id FROM vouchers WHERE request_id = ANY(%s)", (sorted(keys),)).fetchall()
    return {r[0] for r in rows}


def _in_region_failover(report: dict, fault_t: float) -> dict:
    """The Multi-AZ failover's events: promoted in-region node, endpoint moved, DR following; no region switch."""
    fo = [e for e in report["timeline"] if e["kind"] == "failover" and e["ts"] >= fault_t]
    promoted = [e for e in fo if e["event"] == "promoted" and e["data"].get("via") == "multi-az"]
    assert [e["data"]["node"] for e in promoted] == ["primary_c"], fo
    switched = [e for e in fo if e["event"] == "traffic_switched" and e["data"].get("node") == "primary_c"]
    assert switched and set(switched[0]["data"]["proxies"]) == {"primary_app_postgres", "pg_replication"}
    assert [e for e in fo if e["event"] == "rejoined" and e["data"]["region"] == "dr"
            and e["data"]["upstream"] == "primary_c"], "the DR standby did not follow the in-region primary"
    assert not [e for e in fo if e["data"].get("region") == "dr" and e["event"] in ("promoted", "traffic_switched")]
    # the rollback switched back: the zone-a node is the primary again
    assert [e for e in fo if e["event"] == "promoted" and e["data"].get("node") == "primary"
            and e["data"].get("via") == "switchover"]
    return {"promoted_after_s": round(promoted[0]["ts"] - fault_t, 3)}


def _no_write_lost(report: dict, report_dir: Path, lab, fault_t: float) -> None:
    """Nothing acknowledged lost (the synchronous in-region standby had it all), as reported and in the database."""
    assert report["writes"]["measured"] and report["writes"]["lost"] == 0, report["writes"]
    acked = _acknowledged_writes(report_dir)
    assert len(acked) == report["writes"]["acknowledged"] > 20
    missing = set(acked) - _in_database(lab, set(acked))
    assert not missing, f"{len(missing)} acknowledged writes missing in the primary database: {sorted(missing)[:5]}"
    assert [k for k, ts in acked.items() if ts > fault_t], "no write was acknowledged after the failover"


def test_az_loss_promotes_the_in_region_standby_without_region_switch(drill_lab, tmp_path):
    r = drill("run", "experiments/az-loss.json", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    injected = _faults(report)
    assert [e["event"] for e in injected] == ["lose_node", "kill_primary", "fail_over_in_region"]
    assert injected[0]["data"]["zone"] == "ap-northeast-2a"
    fault_t = injected[0]["ts"]
    _in_region_failover(report, fault_t)
    # RTO measured per service (from the zone's loss); the services' return is judged against level 2's downtime
    # on the drill clock (30 min x 0.01) in the run's check
    for o in report["objectives"]:
        assert o["met"] and o["measured"], o
        assert o["rto_measured_s"] is not None or not o["outage_observed"], o
    (check,) = [e for e in report["timeline"] if e["kind"] == "check" and "rescheduled off primary-node-1" in e["event"]]
    assert check["data"]["drill_downtime_s"] == pytest.approx(18.0) and check["data"]["services_back_s"] is not None
    # measured by the run's own probes, not by when the check got to run (after the DR standby followed)
    assert check["data"]["services_back_measured_by"] == "the run's service probes"
    assert {x["zone"] for x in check["data"]["replicas"]} == {"ap-northeast-2c"}
    _no_write_lost(report, tmp_path, drill_lab, fault_t)
    _lab_as_found(drill_lab)


def _app_pids(lab) -> dict[int, int]:
    import httpx

    state = httpx.get(lab.topology()["supervisor"]["url"] + "/regions/primary", timeout=5).json()
    return {r["slot"]: r["pid"] for r in state["replicas"] if r["alive"]}


def test_database_failover_alone_keeps_the_app_tier(drill_lab, tmp_path):
    pids = _app_pids(drill_lab)
    r = drill("run", "experiments/database-failover.json", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    injected = _faults(report)
    assert [e["event"] for e in injected] == ["kill_primary", "fail_over_in_region"]
    fault_t = injected[0]["ts"]
    _in_region_failover(report, fault_t)
    # the app tier was untouched: the same app processes before and after the drill
    assert pids and _app_pids(drill_lab) == pids
    assert all(o["met"] for o in report["objectives"])
    back = [e for e in report["timeline"] if e["kind"] == "check" and e["event"].startswith("every service answers again")]
    assert back and back[0]["data"]["services_back_s"] is not None
    assert back[0]["data"]["drill_downtime_s"] == pytest.approx(18.0)
    _no_write_lost(report, tmp_path, drill_lab, fault_t)
    _lab_as_found(drill_lab)
