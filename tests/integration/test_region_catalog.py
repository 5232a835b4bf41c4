"""The region-level catalog scenarios end to end on the shared session lab, each judged on its must-show:

- region loss while the DR replica lags: the reported lost count equals a count this test makes itself (the run's
  ledger file against the vouchers on the primary), it is above zero, and the lost vouchers are in the copy of the
  old primary the failback kept aside;
- a partition between the regions: the runbook refused to fail over, the databases were never both writable, every
  acknowledged voucher was written in the primary region, replication resumed;
- a long power outage: the DR region ran alone, the old region came back as its standby and caught up, then the
  drill failed back; nothing acknowledged lost beyond the RPO.

Each leaves the lab as it found it (primary serving, standby streaming, fault ledger empty).
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_drill_run import ROOT, assert_lab_on_primary, drill

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOG = {"authentication", "api-gateway", "voucher-service", "tax-invoice-service"}


def _run(lab, name: str, out: Path) -> dict:
    r = drill("run", str(ROOT / "experiments" / f"{name}.json"), "--report-dir", str(out), state=lab.state,
              timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return json.loads((out / "report.json").read_text())


def _timeline(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines() if line.strip()]


def _check(report: dict, event: str) -> dict:
    found = [e for e in report["timeline"] if e["kind"] == "check" and e["event"] == event]
    assert found, f"no check {event!r} in the timeline"
    return found[-1]["data"]


def _ledger_empty(lab) -> None:
    from harness.safety.fault_ledger import FaultLedger, ledger_path

    assert FaultLedger(ledger_path(lab.state)).active() == []


def _primary_dsn(lab) -> str:
    topo = lab.status()
    return next(v["postgres"]["dsn"] for r, v in topo["regions"].items()
                if topo["health"][f"postgres_{r}"]["role"] == "primary")


def _acknowledged_writes(out: Path) -> dict[str, dict]:
    """request id -> the ledger's ok record, read from the run's timeline file (not through the harness)."""
    return {e["data"]["key"]: e for e in _timeline(out)
            if e["kind"] == "op" and e["event"] == "ok" and e["data"]["f"] == "write"}


def test_region_loss_with_a_lagging_replica_loses_exactly_what_it_reports(drill_lab, tmp_path):
    out = tmp_path / "report"
    report = _run(drill_lab, "region-loss-lagging-replica", out)
    # the independent count: acknowledged in the ledger file, absent from the primary (after the failback it holds
    # exactly what the promoted DR database held at the final read: the workload stopped before)
    acked = _acknowledged_writes(out)
    with psycopg.connect(_primary_dsn(drill_lab), connect_timeout=5) as c:
        present = {row[0] for row in c.execute("SELECT request_id FROM vouchers WHERE request_id = ANY(%s)",
                                               (sorted(acked),))}
    lost = sorted(set(acked) - present)
    w = report["writes"]
    print(f"lost: reported {w['lost']}, counted {len(lost)} of {len(acked)} acknowledged; "
          f"RPO {report['rpo_by_service']['voucher-service']['rpo_s']} s, RTO "
          f"{ {o['service']: o['rto_measured_s'] for o in report['objectives']} }, duration {report['duration_s']} s")
    assert len(lost) > 0, "the held WAL stream cost no acknowledged voucher: the replica did not lag"
    assert w["lost"] == len(lost) and w["acknowledged"] == len(acked)
    assert set(w["lost_keys"]) <= set(lost)
    voucher = report["rpo_by_service"]["voucher-service"]
    assert voucher["lost"] == len(lost) and voucher["rpo_s"] > 0 and not voucher["lower_bound"]
    # the lost vouchers were all acknowledged after the WAL stream was held, and the standby was measured behind
    hold = next(e for e in report["timeline"] if e["kind"] == "fault" and e["event"] == "hold_link"
                and e["data"].get("phase") == "inject")
    assert all(acked[k]["ts"] >= hold["ts"] for k in lost)
    behind = _check(report, "DR standby behind the primary")
    assert behind["status"] == "pass" and behind["not_received_bytes"] > 0
    # the degraded pre-condition was declared (lab only) and the gate let the first fault through
    gate = _check(report, "pre-fault gate passed")
    assert gate["status"] == "pass"
    # nothing dropped silently: every lost voucher is in the old primary's data dir the failback kept aside
    kept = _check(report, "lost writes kept aside")
    assert kept["status"] == "pass" and kept["lost"] == len(lost) and kept["in_kept_aside"] == len(lost)
    assert kept["dropped"] == 0
    assert any("kept aside at" in n for n in report["notes"])
    assert {o["service"] for o in report["objectives"] if o["met"]} == CATALOG
    assert all(i["status"] != "fail" for i in report["integrity"])
    assert_lab_on_primary(drill_lab)
    _ledger_empty(drill_lab)


def test_partition_between_the_regions_refuses_split_brain(drill_lab, tmp_path):
    out = tmp_path / "report"
    report = _run(drill_lab, "inter-region-partition", out)
    refused = _check(report, "split brain refused during the partition")
    print(f"partition: {refused['roles']}, refusal: {refused['refusal']}; duration {report['duration_s']} s")
    assert refused["status"] == "pass" and refused["refused"] is True
    assert "not confirmed" in refused["refusal"] and "not failing over" in refused["refusal"]
    roles = refused["roles"]
    assert roles["samples"] >= 5 and roles["both_writable"] == 0
    # DR never left recovery (a sample may miss an answer on a loaded machine: "down" is no promotion)
    assert set(roles["roles"]["dr"]) <= {"standby", "down"} and roles["roles"]["dr"].get("standby", 0) > 0
    assert roles["roles"]["primary"].get("writable", 0) > 0
    # the runbook never promoted anything nor moved traffic
    assert not [e for e in report["timeline"] if e["kind"] == "failover" and e["event"] in
                ("promoted", "traffic_switched", "fenced")]
    # from the ledger file: every acknowledged voucher was served by the primary region, none lost
    acked = _acknowledged_writes(out)
    assert acked and {e["data"]["value"]["region"] for e in acked.values()} == {"primary"}
    assert report["writes"]["lost"] == 0
    with psycopg.connect(_primary_dsn(drill_lab), connect_timeout=5) as c:
        n = c.execute("SELECT count(*) FROM vouchers WHERE request_id = ANY(%s)", (sorted(acked),)).fetchone()[0]
    assert n == len(acked)
    resumed = _check(report, "replication resumed after the partition")
    print(f"replication resumed: {resumed}")
    assert resumed["resumed"] is True and resumed["behind_bytes"] > 0 and resumed["postgres_caught_up_s"] >= 0
    assert _check(report, "lab as found")["status"] == "pass"
    assert_lab_on_primary(drill_lab)
    _ledger_empty(drill_lab)


def test_long_power_outage_dr_runs_alone_old_region_rejoins_as_standby(drill_lab, tmp_path):
    out = tmp_path / "report"
    report = _run(drill_lab, "long-power-outage", out)
    alone = _check(report, "dr region ran alone")
    rejoined = _check(report, "primary region rejoined as the standby of dr")
    print(f"alone: {alone['acknowledged_by_region']} in {alone['seconds']} s; rejoin: behind "
          f"{rejoined['behind_bytes_at_rejoin']} B, caught up in {rejoined['caught_up_s']} s, lag "
          f"{rejoined['replay_lag_s']} s; duration {report['duration_s']} s")
    assert alone["status"] == "pass" and alone["acknowledged_by_region"].get("dr", 0) > 0
    assert set(alone["acknowledged_by_region"]) == {"dr"}
    assert alone["other_region_after"]["postgresql"] == "down"
    assert rejoined["status"] == "pass" and rejoined["replay_lag_s"] is not None
    # the rejoin happened while DR served, before the failback
    fo = [e for e in report["timeline"] if e["kind"] == "failover"]
    names = [(e["event"], e["data"].get("component"), e["data"].get("region")) for e in fo]
    rejoin_at = names.index(("rejoined", "postgresql", "primary"))
    assert ("failback_started", None, None) in [(n[0], None, None) for n in names[rejoin_at:]]
    # objectives per service, integrity, nothing acknowledged lost beyond the RPO
    assert {o["service"] for o in report["objectives"] if o["met"]} == CATALOG
    assert all(i["status"] != "fail" for i in report["integrity"])
    for svc, r in report["rpo_by_service"].items():
        if r.get("rpo_s") is not None:
            target = next(o["rpo_target_s"] for o in report["objectives"] if o["service"] == svc)
            assert r["rpo_s"] <= target and not r.get("lower_bound"), (svc, r)
    assert report["checklist"] and all(c["status"] != "fail" for c in report["checklist"])
    assert_lab_on_primary(drill_lab)
    _ledger_empty(drill_lab)
