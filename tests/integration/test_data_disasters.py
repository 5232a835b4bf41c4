"""The data disasters of the catalog run end to end on the shared lab, each once: data corruption repaired from a
point-in-time recovery, a ransomware-encrypted tenant restored, the database restored from the DR-region copies
after the primary region and its bucket are lost.

They share the session lab although it may have been failed over and back (its primary on a later timeline):
each drill takes a base backup of the current primary first, so its recovery replays WAL of one timeline only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from harness.lab import aws
from harness.safety.fault_ledger import FaultLedger, ledger_path
from harness.workload import find_primary_dsn
from tests.timing import poll, scaled
from tests.cli import drill_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
ATTACKED = 3
#: a company's rows per table (the test's own definition, independent of harness.backup.repair)
COMPANY_ROWS = {
    "companies": "id = %(cid)s",
    "accounts": "company_id = %(cid)s",
    "users": "company_id = %(cid)s",
    "vouchers": "company_id = %(cid)s",
    "voucher_lines": "voucher_id IN (SELECT id FROM vouchers WHERE company_id = %(cid)s)",
    "tax_invoices": "company_id = %(cid)s",
}


def drill(*args: str, state: Path, timeout: float = scaled(1200), **env: str) -> subprocess.CompletedProcess:
    return drill_cli(*args, state=state, timeout=timeout, env=env)


def events(report: dict, name: str) -> list[dict]:
    return [e for e in report["timeline"] if e["event"] == name]


def checksums(dsn: str, upto: dict[str, int] | None = None) -> tuple[dict[str, int], dict[int, dict[str, tuple]]]:
    """(max id per table, {company: {table: (rows, md5 of its rows in id order)}}) for rows up to `upto`."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=15) as c:
        upto = upto or {t: c.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0] for t in COMPANY_ROWS}
        companies = [r[0] for r in c.execute("SELECT id FROM companies ORDER BY id")]
        out = {cid: {t: tuple(c.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY id), ''))"
                                        f" FROM {t} x WHERE {where} AND id <= %(upto)s",
                                        {"cid": cid, "upto": upto[t]}).fetchone())
                     for t, where in COMPANY_ROWS.items()} for cid in companies}
    return upto, out


def assert_left_as_found(lab) -> None:
    assert FaultLedger(ledger_path(lab.state)).active() == []

    def as_found() -> bool:  # a loaded machine may answer a health check late: polled, not asserted once
        status = lab.status()
        return status["healthy"] and status["router"]["active_region"] == "primary"

    poll(as_found, 60, "the lab healthy on its primary region")


def test_data_corruption_is_detected_and_repaired_from_pitr(drill_lab, tmp_path):
    r = drill("run", "experiments/data-corruption.json", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    (fault,) = [e for e in report["timeline"] if e["kind"] == "fault" and e["event"] == "corrupt_voucher_lines"
                and e["data"]["phase"] == "inject"]
    touched = {str(v) for v in fault["data"]["voucher_ids"]}
    assert len(touched) == 5 and len(fault["data"]["line_ids"]) == 5
    # detected: the balanced-voucher check failed and named every corrupted voucher
    (detected,) = events(report, "integrity violation detected: vouchers_balanced")
    assert detected["data"]["status"] == "pass" and touched <= set(detected["data"]["offending"]), detected
    assert detected["data"]["detection_s"] > 0
    # repaired from a new server recovered to just before the corruption: only those rows
    (repaired,) = events(report, "corruption repaired from point-in-time recovery")
    d = repaired["data"]
    assert d["status"] == "pass" and d["rows_repaired"] == 5 and sorted(d["line_ids"]) == sorted(
        fault["data"]["line_ids"]), d
    assert d["integrity_after"]["status"] == "pass" and d["rpo_s"] is not None and d["repair_s"] > 0, d
    assert d["recovered_to"] is None or d["recovered_to"] <= d["before"]
    # everything written after the corruption stayed, and every integrity check passes at the end
    assert report["writes"]["lost"] == 0 and report["writes"]["acknowledged"] > 50
    assert report["integrity"] and all(i["status"] != "fail" for i in report["integrity"]), report["integrity"]
    with psycopg.connect(find_primary_dsn(drill_lab.topology(), connect_timeout_s=15)) as c:
        assert c.execute("SELECT count(*) FROM voucher_lines WHERE id = ANY(%s) AND (debit::text LIKE '%%777.77' "
                         "OR credit::text LIKE '%%777.77')", (fault["data"]["line_ids"],)).fetchone()[0] == 0
    assert_left_as_found(drill_lab)


def test_ransomware_tenant_restored_and_other_tenants_untouched(drill_lab, tmp_path):
    live = find_primary_dsn(drill_lab.topology(), connect_timeout_s=15)
    upto, before = checksums(live)  # the test's own pre-attack fingerprint
    assert ATTACKED in before and len(before) >= 2
    r = drill("run", "experiments/ransomware.json", "--report-dir", str(tmp_path), state=drill_lab.state,
              DRILL_RANSOMWARE_COMPANY_ID=str(ATTACKED))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    (fault,) = [e for e in report["timeline"] if e["kind"] == "fault" and e["event"] == "encrypt_tenant"
                and e["data"]["phase"] == "inject"]
    assert fault["data"]["company_id"] == ATTACKED and fault["data"]["rows"]["voucher_lines"] > 0
    (detected,) = events(report, "integrity violation detected: vouchers_balanced")
    assert detected["data"]["status"] == "pass"
    (restored,) = events(report, "tenant restored from backup and point-in-time recovery")
    d = restored["data"]
    assert d["status"] == "pass" and d["verified_against_pre_attack"] and d["live_matches_copy"], d
    assert d["rows_restored"] >= fault["data"]["rows"]["voucher_lines"] + fault["data"]["rows"]["companies"]
    assert all(c["status"] != "fail" for c in d["copy_checks"] + d["live_checks"])
    # must-show: the tenant's rows restored and verified (against the test's own fingerprint) ...
    _, after = checksums(live, upto)
    assert after[ATTACKED] == before[ATTACKED]
    # ... and the other tenants' rows untouched
    others = [cid for cid in before if cid != ATTACKED]
    assert {cid: after[cid] for cid in others} == {cid: before[cid] for cid in others}
    with psycopg.connect(live) as c:
        assert c.execute("SELECT count(*) FROM companies WHERE name LIKE 'ENC:%'").fetchone()[0] == 0
    assert report["integrity"] and all(i["status"] != "fail" for i in report["integrity"])
    assert_left_as_found(drill_lab)


def test_natural_disaster_restores_from_the_dr_region_copies(drill_lab, tmp_path):
    r = drill("run", "experiments/natural-disaster.json", "--report-dir", str(tmp_path), state=drill_lab.state)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    (blocked,) = [e for e in report["timeline"] if e["kind"] == "fault" and e["event"] == "block_bucket"
                  and e["data"]["phase"] == "inject"]
    assert blocked["data"]["bucket"] == "kerp-backups"
    (restored,) = events(report, "restored from the DR-region copies")
    d = restored["data"]
    # restored from kerp-backups-dr alone while kerp-backups did not answer, WAL included
    assert d["status"] == "pass" and d["bucket"] == "kerp-backups-dr" and d["primary_bucket_reachable"] is False, d
    assert d["wal_segments"] > 0 and d["present"] > 0 and all(c["status"] != "fail" for c in d["integrity"])
    # its RPO measured against the acknowledged writes up to the region loss (the archive closes a WAL segment
    # every archive_timeout: what is lost is at most the unarchived tail)
    assert d["rpo"]["acknowledged"] > 0 and d["rpo_s"] >= 0 and d["lost"] < d["rpo"]["acknowledged"], d
    # the primary bucket is back, every object there
    s3 = aws.client("s3", drill_lab.topology()["s3"]["endpoint_url"])
    assert s3.list_objects_v2(Bucket="kerp-backups", Prefix="postgresql/base/")["KeyCount"] > 0
    assert_left_as_found(drill_lab)
