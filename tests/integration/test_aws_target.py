"""The aws target and the lab-cloud planes on the lab's AWS control plane: probes read the lab as AWS resources,
`drill run ci-smoke --env lab-cloud` fails the region over through the APIs only, and a promote through the RDS API
leaves the lab's standby writable. One lab (the session's); each test leaves it on the primary region."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from harness.failover.failback import fail_back, lab_shape
from harness.targets import _lab
from harness.targets.aws import actions, probes
from tests.integration.test_drill_run import CATALOG, drill

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cfg(drill_lab) -> dict:
    return {"drill_state_dir": str(drill_lab.state), "drill_environment_file": "lab-cloud",
            "drill_environment_kind": "lab-cloud"}


def _in_recovery(dsn: str) -> bool:
    with psycopg.connect(dsn, connect_timeout=2) as c:
        return c.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def assert_starting_shape(cfg: dict) -> None:
    """The lab in shape on the primary region, and the AWS API showing the same."""
    assert lab_shape(_lab.resolve(cfg))["ok"]
    primary, dr = probes.rds_instance("primary", configuration=cfg), probes.rds_instance("dr", configuration=cfg)
    assert primary["status"] == "available" and primary["replica_of"] is None
    assert dr["status"] == "available" and dr["replica_of"] and dr["replica_of"].endswith(":db:kerp-db-primary")
    records = {r["failover"]: r for r in probes.route53_failover_records(configuration=cfg)}
    assert records["PRIMARY"]["set_identifier"] == "ap-northeast-2" and records["PRIMARY"]["health_check_id"]
    assert records["SECONDARY"]["set_identifier"] == "ap-northeast-1" and records["SECONDARY"]["health_check_id"]
    assert probes.route53_answer_region(configuration=cfg) == "primary"
    assert probes.cache_primary_region(configuration=cfg) == "primary"


def test_probes_read_the_lab_as_aws_resources(cfg):
    assert_starting_shape(cfg)
    lag = probes.rds_replica_lag("dr", configuration=cfg)
    assert lag["replication"] == "replicating" and lag["lag_s"] is not None and lag["lag_s"] < 60
    hc = probes.route53_health_check_status("primary", configuration=cfg)
    assert hc["healthy"] is True and hc["inverted"] is False
    assert probes.kms_key_state(configuration=cfg)["state"] == "Enabled"
    s3 = probes.s3_backup_replication(configuration=cfg)
    assert s3["primary"]["versioning"] == s3["dr"]["versioning"] == "Enabled"


def test_ci_smoke_under_lab_cloud_fails_over_through_the_apis(drill_lab, cfg, tmp_path):
    out = tmp_path / "report"
    r = drill("run", "ci-smoke", "--env", "lab-cloud", "--report-dir", str(out), state=drill_lab.state)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "passed"
    # objectives measured on the real data plane, as under the lab's own adapters
    assert {o["service"] for o in report["objectives"]} == CATALOG
    assert all(o["met"] and 0 < o["rto_measured_s"] < o["rto_target_s"] for o in report["objectives"])
    assert report["writes"]["acknowledged"] > 50 and report["writes"]["lost"] == 0
    events = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines()]
    failover = [e for e in events if e["kind"] == "failover"]
    # the fault and the failover went through the APIs, in this order
    calls = [e["data"]["call"] for e in failover if e["event"] == "api_call"]
    run_calls = calls[:calls.index("route53:ChangeResourceRecordSets") + 1]
    assert run_calls == ["rds:StopDBInstance", "rds:PromoteReadReplica", "elasticache:TestFailover",
                         "route53:ChangeResourceRecordSets"], calls
    runbook = [e for e in failover if e["event"] in ("promoted", "traffic_switched") and e["data"]["region"] == "dr"]
    assert {(e["event"], e["data"].get("via")) for e in runbook} == {
        ("promoted", "aws rds and elasticache"), ("traffic_switched", "route53 failover records")}
    # the DR region's apps were scaled up through the Kubernetes API
    assert [e["data"].get("via") for e in failover if e["event"] == "scaled" and e["data"]["region"] == "dr"] \
        == ["kubernetes api"], [e for e in failover if e["event"] == "scaled"]
    fault = next(e for e in events if e["kind"] == "fault" and e["event"].startswith("fail_region"))
    assert fault["ts"] <= next(e for e in failover if e["event"] == "api_call")["ts"]
    # failback: the lab and its AWS view are back in the starting shape (replica re-linked, record pair as built)
    assert_starting_shape(cfg)


def test_promote_through_the_rds_api_leaves_the_standby_writable(drill_lab, cfg):
    dsn = _lab.resolve(cfg).pg_dsn("dr")
    assert _in_recovery(dsn)
    try:
        res = actions.rds_promote_read_replica("dr", configuration=cfg)
        assert res["already_primary"] is False
        assert _in_recovery(dsn) is False  # the real standby: pg_is_in_recovery() false
        view = probes.rds_instance("dr", configuration=cfg)
        assert view["status"] == "available" and view["replica_of"] is None
        assert actions.rds_promote_read_replica("dr", configuration=cfg)["already_primary"] is True  # idempotent
    finally:
        fail_back("primary", configuration=cfg)
    assert _in_recovery(dsn)
    assert_starting_shape(cfg)
